"""The kerasattn model zoo: prebuilt attention models and their command line."""
