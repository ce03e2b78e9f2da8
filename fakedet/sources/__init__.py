"""Where labelled samples come from: folder layouts (ours and public ones), CSV labels, shards,
and the cached index of a dataset's files with their header facts."""
