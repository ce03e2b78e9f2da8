"""Batches from labelled samples: decoding images robustly, the train and eval transforms,
augmentations, caches of decoded pixels and backbone features, loaders, and the dataset audit.
Where the samples come from is `fakedet.sources`."""
