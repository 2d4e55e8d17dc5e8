"""What comes in: the R2Z2 feed, ESI, bulk imports, and the worker that stores each kill.

Entry: `pipeline.Pipeline`."""
