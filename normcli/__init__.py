"""normcli: learn normalization statistics from tabular data and apply them, streaming."""
__version__ = "0.1.0"

from normcli.api import fit, load, merge, transform  # noqa: E402
from normcli.errors import NormcliError  # noqa: E402
from normcli.export import export  # noqa: E402
from normcli.export.sklearn import from_sklearn, to_sklearn  # noqa: E402
from normcli.model import Stats  # noqa: E402

__all__ = ["fit", "load", "merge", "transform", "export", "to_sklearn", "from_sklearn", "Stats",
           "NormcliError", "__version__"]
