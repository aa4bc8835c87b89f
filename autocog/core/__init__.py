"""The layer under every backend, with no backend imports: the types that cross layers (`types`), input checks
(`checks`), normalizations and priors (`normalization`), the token choice tree (`trie`), stop strings and the
stream hold-back (`stops`), sampling, chat messages and templates (`chat`) and the decoding constraint interface
(`constraint`)."""
