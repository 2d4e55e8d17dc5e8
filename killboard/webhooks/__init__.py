"""Kills to Discord and other webhooks, by channel, durably (README, "Webhooks")."""
