"""Distributed sweep orchestrator: sweep file → trials → backend → trainer → record store → parquet tables."""
