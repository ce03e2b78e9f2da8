"""Tar (WebDataset) and Parquet shards as a data source: finding them, indexing each shard once,
reading one sample's bytes by its key, and writing datasets as shards."""
