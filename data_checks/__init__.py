"""Great Expectations data gate for the readmission data set."""
