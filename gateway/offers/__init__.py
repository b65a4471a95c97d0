"""OFFERS: decide, record and redeem local push offers.

`engine` holds the pure decision (`decide_pickup`: consent, caps, quiet hours, stock, each refusal
with its reason), the offer codes, and `OfferEngine`, which records decisions and offers in the
state database inside the batch's transaction.
"""
