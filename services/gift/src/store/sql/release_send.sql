-- release_send(p_id uuid, p_sender text, p_room uuid, p_gift text, p_combo int) returns void
--
-- Forgets a claim whose payment the wallet refused (insufficient funds), so the key and the
-- combo streak are as before the send (docs/decisions/0004: undo only on a definite refusal).
--
-- Inputs: the claim's id, sender, room and gift, and the combo step it took.
-- Output: none.
--
-- Invariants
--   - The send row goes, so the key can be used again.
--   - The streak steps back only if it still is the released step (no later send took a step
--     since); a released first step (streak 1) removes the streak row. The streak's last time
--     stays: a refused send can stretch the window by the length of that one request.
--
-- Refusals: none; releasing an unknown claim changes nothing.
create or replace function release_send(p_id uuid, p_sender text, p_room uuid, p_gift text, p_combo int)
returns void
language sql
set search_path from current
as $$
  delete from sends where id = p_id;
  update combos set streak = streak - 1
  where sender_id = p_sender and room_id = p_room and gift_id = p_gift and streak = p_combo and streak > 1;
  delete from combos
  where p_combo = 1 and sender_id = p_sender and room_id = p_room and gift_id = p_gift and streak = 1;
$$;
