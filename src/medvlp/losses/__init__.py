"""medvlp.losses."""
