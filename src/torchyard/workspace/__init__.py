"""The workspace: metadata store, run folders and artifacts."""
