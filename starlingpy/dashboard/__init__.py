"""``starlingpy dashboard``: queues, workers and the failure queue in a browser."""
