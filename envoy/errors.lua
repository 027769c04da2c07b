-- Response shaping for REST callers; native gRPC responses pass untouched.
--
-- 1. A gRPC error that carries x-http-status / x-error-json (set by the
--    modelway server before the first message) becomes that exact HTTP
--    status and body.
-- 2. Envoy's own 4xx replies (already OpenAI-shaped by local_reply_config)
--    get `param` / `code` for a wrong field type, as OpenAI reports them.
-- 3. gRPC plumbing headers are not shown to HTTP clients.

local GRPC_HEADERS = {"grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding", "grpc-encoding"}

local function replace_body(handle, text)
  local body = handle:body(true)
  body:setBytes(text)
end

local function refine_local_reply(handle)
  local body = handle:body(true)
  local text = body:getBytes(0, body:length())
  local field = string.match(text, '"message":"([%w_%.%[%]]+): invalid value')
  if field ~= nil then
    text = string.gsub(text, '"param":null', '"param":"' .. field .. '"', 1)
    text = string.gsub(text, '"code":null', '"code":"invalid_type"', 1)
  elseif handle:headers():get(":status") == "400" then
    text = string.gsub(text, '"message":"', '"message":"We could not parse the JSON body of your request: ', 1)
  end
  body:setBytes(text)
end

-- Whether the caller speaks gRPC is a property of the request: a transcoded
-- unary error still says content-type application/grpc on the way back.
function envoy_on_request(handle)
  local content_type = handle:headers():get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    handle:streamInfo():dynamicMetadata():set("modelway", "grpc", true)
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local is_grpc = (handle:streamInfo():dynamicMetadata():get("modelway") or {})["grpc"] == true
  local status = headers:get("x-http-status")
  local error_json = headers:get("x-error-json")
  headers:remove("x-http-status")
  headers:remove("x-error-json")
  if is_grpc then
    return
  end
  for _, name in ipairs(GRPC_HEADERS) do
    headers:remove(name)
  end
  if headers:get("x-modelway-local-reply") ~= nil then
    headers:remove("x-modelway-local-reply")
    refine_local_reply(handle)
    return
  end
  if status ~= nil then
    headers:replace(":status", status)
    headers:replace("content-type", "application/json")
    if error_json ~= nil then
      replace_body(handle, error_json)
    end
  end
end
