"""The reference application's web tier: models, the web app that takes
submissions, and a command-line submitter. See the README, "The reference application"."""
