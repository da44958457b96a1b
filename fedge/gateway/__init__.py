"""The site gateway: a device to the cloud coordinator, and a coordinator to its site's devices.

- :mod:`~fedge.gateway.config`: ``gateway.toml``, typed and validated.
- :mod:`~fedge.gateway.uplink`: the gateway's one identity towards the cloud (mutual TLS).
- :mod:`~fedge.gateway.state`: its SQLite state: the site's roster, the last release manifest
  the cloud targeted at each device, and the reports queued for the cloud.
- :mod:`~fedge.gateway.cache`: releases fetched once from the cloud and served to the site.
- :mod:`~fedge.gateway.services`: the fleet, model hub and enrolment services for its devices.
- :mod:`~fedge.gateway.rounds`: a cloud round's share run on the site, answered once.
- :mod:`~fedge.gateway.server`: the process that ties them together.
"""
