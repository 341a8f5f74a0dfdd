"""The stream: Faust workers that read raw LLM logs from Kafka, run the detection pipeline and write the results.

``ingest`` decodes and normalises raw messages and regroups the events by identity onto an internal topic;
``detect`` runs the pipeline per identity and writes enriched events and alerts to Elasticsearch and Kafka;
``archive_dead_letters`` copies dead letters from their topic into Elasticsearch.
"""
