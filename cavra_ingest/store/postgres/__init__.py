"""The PostgreSQL store (asyncpg), for deployments beyond one machine: `store` holds it."""
