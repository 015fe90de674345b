"""Screenshot knowledge base: index images and PDFs, hybrid search, answers grounded in the pages."""
