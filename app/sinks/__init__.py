"""Where the stream's results go: Elasticsearch (bulk, idempotent, retried until acknowledged) and dead letters."""
