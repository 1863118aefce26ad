"""The reference application's worker side: the tasks and the grader.
Started by ``starlingpy up -c workers/starlingpy.toml``."""
