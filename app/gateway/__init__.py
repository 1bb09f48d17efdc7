"""The read gateway: memstream's HTTP API v2 (docs/contract.md §2).

Writes become events on `memory.events`; reads come from the Redis hotset and fall back to the
warehouse. Ranking, context assembly and visibility rules are pure functions (search.py,
context.py, visibility.py); Redis, Kafka and Snowflake sit behind thin adapters (reads.py,
writes.py, warehouse.py).
"""

from app.gateway.app import create_app

__all__ = ["create_app"]
