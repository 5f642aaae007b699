"""``python -m normcli``."""
from normcli.launch import run

# Guarded: worker processes started with the spawn method (Dask's LocalCluster) import this
# module under another name and must not run the command line again.
if __name__ == "__main__":
    run()
