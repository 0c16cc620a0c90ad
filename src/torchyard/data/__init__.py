"""Data for runs: datastores (local folders, S3-compatible buckets, fsspec URLs) and references to them.

See :mod:`torchyard.data.datastore`. Importing this package loads neither fsspec nor s3fs.
"""

from torchyard.data.datastore import (
    DEFAULT_DATASTORE,
    DataError,
    DataReference,
    Datastore,
    DatastoreRegistry,
    default_datastore,
    resolve_input,
    upload_output,
)

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
