"""HubForge."""
