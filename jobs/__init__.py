"""APScheduler job definitions: thin wrappers over the desk and the engines."""
