"""Insurer-side web service: the IICMVA ``VerifyInsurance`` SOAP endpoint and its policy store."""
