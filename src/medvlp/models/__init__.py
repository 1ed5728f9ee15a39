"""medvlp.models."""
