"""Spawners: the backends that run a user's server from a resolved spawner profile.

``base.ProfileSpawnerMixin`` holds what every backend shares (the spawn form, the
validation of ``user_options`` against the profiles, progress events); ``local`` runs
servers as local processes (the embedded default). ``gpus`` and ``cgroups`` are the
local backend's small resource managers.
"""
