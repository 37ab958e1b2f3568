"""Project utilities that register nothing (imported explicitly)."""
