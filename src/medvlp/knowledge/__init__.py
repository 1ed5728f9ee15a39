"""medvlp.knowledge."""
