"""Canary releases: a challenger beside the champion, compared online, promoted or rolled back."""
