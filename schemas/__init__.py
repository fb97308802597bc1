"""Record contracts: the chunk envelope, the recording manifest, one contract per modality."""
