"""newsletter: editions to responsive email, subscriber lists, sending through Amazon SES."""

__version__ = "0.1.0"
