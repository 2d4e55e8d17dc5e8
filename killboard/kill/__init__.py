"""What a kill is: validated, named, priced, enriched, matched to channels and encoded once (entry: `enrich.enrich`)."""
