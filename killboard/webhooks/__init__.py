"""Kills to Discord and other webhooks, by channel, durably (docs/webhooks.md)."""
