"""Data sets: kaggle_3m-style folders, the canonical patient-level split, the bundled sample."""
