"""normcli: learn normalization statistics from tabular data and apply them, streaming."""
__version__ = "0.1.0"

from normcli.api import fit, load, merge, transform  # noqa: E402
from normcli.errors import NormcliError  # noqa: E402
from normcli.model import Stats  # noqa: E402

__all__ = ["fit", "load", "merge", "transform", "Stats", "NormcliError", "__version__"]
