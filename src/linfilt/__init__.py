"""linfilt: class-wide machine unlearning by linear filtration."""
__version__ = "0.1.0"
