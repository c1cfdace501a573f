"""The operators' tasks: status, trigger, ping, and run-history retention."""
