-- A decision's recipient signature, when the recipient is a phone number, gave the number
-- away to whoever holds a copy and knows the numbers of rows of their own (the bits of a
-- number's trigrams add up): numbers now carry none (gateway/store/sealing.py
-- recipient_signature), and a search for part of one reads every row without one.
UPDATE decisions SET recipient_terms = 0 WHERE channel <> 'email' AND recipient_terms <> 0;
