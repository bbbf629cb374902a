"""Continuous backup (issue 15): the object store and the agent that ships the committed log
from the storage nodes. The rules are in sixfold/core/backup.py; the restore, which writes
storage nodes' stores, is storage_node/restore.py."""
