"""Thin adapters that write intents to Redis and Snowflake."""
