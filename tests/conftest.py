"""Suite-wide set-up: the helper modules in this folder (``fake_records``) are importable."""
