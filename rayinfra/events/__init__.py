"""The event bus: every row of the state store's ``events`` table, published to Kafka.

- :mod:`rayinfra.events.publisher`: the pure part (the original's envelope, record encoding,
  rounds, cursor arithmetic), with no Ray, subprocess or Kafka import;
- :mod:`rayinfra.events.kafka`: the one wrapper around kafka-python;
- :mod:`rayinfra.events.metrics`: the bus's Prometheus registry.

The ``event_bus`` actor (:mod:`rayinfra.actors.event_bus`) is the thin shell that runs them.
Nothing is imported here, so that ``import rayinfra.events.publisher`` stays cheap.
"""
