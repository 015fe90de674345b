"""Shared zh/en text helpers at the bottom of the package: language detection, OCR line layout."""
