-- audit.lua: what `flashsale reconcile` needs of one product in one atomic read: the
-- reservable stock, the journal (changes PostgreSQL may not have yet), and the quantity of
-- each order the journal names.
--
-- KEYS[1] stock  KEYS[2] journal
-- ARGV[1] the order-record key prefix of this product (`<pfx>:{p:P}:order:`)
--
-- Returns {stock ('' when not loaded), {member, ...}, {ref, qty, ref, qty, ...}} with the
-- quantity of every order a journal member names ('' when its record is gone).
-- Reads only.

local stock = redis.call('GET', KEYS[1]) or ''
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
local qtys = {}
for _, member in ipairs(members) do
  local list, state = string.match(member, '^(.*)|([^|]*)$')
  if list and not string.match(member, '^restock|') then
    local refs = {}
    if state == 'pending' then
      for ref in string.gmatch(list, '[^,]+') do
        refs[#refs + 1] = ref
      end
    else
      refs[1] = list
    end
    for _, ref in ipairs(refs) do
      local rec = read_record(ARGV[1] .. ref)
      qtys[#qtys + 1] = ref
      qtys[#qtys + 1] = rec and int(rec.qty) or ''
    end
  end
end
return {stock, members, qtys}
