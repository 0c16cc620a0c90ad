"""Data for runs: datastores (local folders, S3-compatible buckets, fsspec URLs) and references to them.

    references.py   DataReference and the name and path rules every data module shares
    datastore.py    Datastore (its I/O through fsspec) and the workspace's registry of them
    transfer.py     resolve_input (in place, hard links, or a download through the content cache)
                    and upload_output

Importing this package loads neither fsspec nor s3fs.
"""

from torchyard.data.datastore import DEFAULT_DATASTORE, Datastore, DatastoreRegistry, default_datastore
from torchyard.data.references import DataReference
from torchyard.data.transfer import resolve_input, upload_output
from torchyard.errors import DataError

__all__ = [
    "DEFAULT_DATASTORE",
    "DataError",
    "DataReference",
    "Datastore",
    "DatastoreRegistry",
    "default_datastore",
    "resolve_input",
    "upload_output",
]
