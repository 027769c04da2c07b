-- The edge's checks and the REST callers' error shape; native gRPC passes
-- untouched unless a request must be refused before it reaches the server.
--
-- On the way in (before the transcoder, so before anything reads a header):
-- 1. URL over 8 KiB -> 414; one header value over 8 KiB or all headers over
--    32 KiB -> 431; a header value with a byte that is not visible ASCII,
--    space or tab -> 400, or 401 for a credential header. grpcio logs a whole
--    header it cannot encode, so a key with a stray byte must stop here.
-- 2. gRPC over HTTP/1 -> 415; grpc-* headers are dropped from REST calls (a
--    REST client's grpc-timeout must not become a gRPC deadline), and so are
--    the query parameters a REST route does not read.
--    A GET /api/v1/models[/{model}] that carries its key Gemini's way and no
--    Authorization header (the google-genai SDK's default v1) is sent to
--    Gemini's model list, /api/v1beta/models[/{model}].
-- On the way out:
-- 3. A gRPC error that carries x-http-status / x-error-json (set by the
--    modelway server before the first message) becomes that exact HTTP
--    status and body.
-- 4. Envoy's own replies (already OpenAI-shaped by local_reply_config) get a
--    message that names the problem, from x-modelway-details, and `param` /
--    `code` for a wrong field type, as OpenAI reports them.
-- 5. gRPC plumbing headers are not shown to HTTP clients; every response
--    has an X-Request-Id (the server's, or Envoy's when the server did not
--    answer).
-- 6. The gateway-native API (/api/v1/ai/...) has its own error shape,
--    {"error":{"code":"...","message":"..."}}: Envoy's replies and refusals
--    on those paths use it (see "Gateway-native" below), and a server that
--    does not answer is its documented 503 SERVICE_UNAVAILABLE with
--    Retry-After: 60.
-- 7. The catalog and chat/send routes answer in their envelope, {"success":false,"message":"..."}
--    (see "Catalog and chat/send" below).

local MAX_URL_BYTES = 8192
local MAX_HEADER_VALUE_BYTES = 8192
local MAX_HEADERS_BYTES = 32768
local MAX_BODY_MIB = 16

local GRPC_HEADERS = {"grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding", "grpc-encoding"}
local CREDENTIAL_HEADERS = {authorization = "Authorization", ["x-api-key"] = "X-Api-Key", ["x-goog-api-key"] = "X-Goog-Api-Key"}
local HEALTH_PATHS = {["/healthz"] = true, ["/readyz"] = true}
-- The query parameters each REST route reads (by method and path). Any other is dropped before the
-- transcoder, which binds a parameter that shares a field's name over the path and the body
-- (DELETE /api/v1/api-keys/A?id=B deleted B). A route with a query parameter is added here too.
local ROUTE_QUERY = {
  ["GET /api/v1/api-usage"] = {start_date = true, end_date = true},
  ["DELETE /api/v1/api-keys"] = {id = true},
  ["PATCH /api/v1/api-keys"] = {id = true},
  -- Gemini's model list pages (the SDK sends camelCase; snake_case is accepted too).
  ["GET /api/v1beta/models"] = {pageSize = true, pageToken = true, page_size = true, page_token = true},
  -- The public catalog's search and pages, and the chat/send conversation list's pages.
  ["GET /api/models"] = {q = true, category = true, type = true, page = true},
  ["GET /api/v1/chat/conversations"] = {page = true},
}
-- Kept on Gemini's routes only (is_gemini_path): its ?key= and ?alt= (the transcoder ignores both). A key
-- in any other URL is dropped here, so it is no credential there (the server reads it on Gemini's only).
local GEMINI_QUERY = {key = true, alt = true}
-- The transcoder names proto types; callers think in JSON.
local FIELD_TYPES = {TYPE_STRING = "a string", TYPE_BOOL = "a boolean", TYPE_DOUBLE = "a number",
  TYPE_FLOAT = "a number", TYPE_INT32 = "an integer", TYPE_INT64 = "an integer", TYPE_UINT32 = "an integer",
  TYPE_UINT64 = "an integer", TYPE_SINT32 = "an integer", TYPE_SINT64 = "an integer", TYPE_ENUM = "a string",
  TYPE_MESSAGE = "an object"}
local INTEGER_RANGES = {TYPE_INT32 = "-2147483648 to 2147483647", TYPE_SINT32 = "-2147483648 to 2147483647",
  TYPE_UINT32 = "0 to 4294967295"}

local function json_string(text)
  local escaped = string.gsub(text, '[%c"\\\128-\255]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

local function error_json(message, kind, param, code)
  local function value(v)
    return v == nil and "null" or json_string(v)
  end
  return '{"error":{"message":' .. json_string(message) .. ',"type":' .. json_string(kind)
    .. ',"param":' .. value(param) .. ',"code":' .. value(code) .. '}}'
end

-- Gemini routes (/api/v1beta/..., and POST /api/v1/models/{model}:method, which
-- OpenAI's API does not have) answer Envoy's own errors in Google's shape,
-- {"error": {"code", "message", "status"}}, as the server's Gemini dialect does.
local GEMINI_STATUS = {["400"] = "INVALID_ARGUMENT", ["401"] = "UNAUTHENTICATED", ["403"] = "PERMISSION_DENIED",
  ["404"] = "NOT_FOUND", ["413"] = "INVALID_ARGUMENT", ["414"] = "INVALID_ARGUMENT", ["415"] = "INVALID_ARGUMENT",
  ["429"] = "RESOURCE_EXHAUSTED", ["431"] = "INVALID_ARGUMENT", ["500"] = "INTERNAL", ["501"] = "UNIMPLEMENTED",
  ["502"] = "UNAVAILABLE", ["503"] = "UNAVAILABLE", ["504"] = "DEADLINE_EXCEEDED"}

local function is_gemini_path(method, path)
  return path == "/api/v1beta" or string.sub(path, 1, 12) == "/api/v1beta/"
    or (method == "POST" and string.sub(path, 1, 15) == "/api/v1/models/")
end

-- The google-genai SDK lists and gets models at GET /api/v1/models[/{model}] by default (api_version
-- v1), which are OpenAI's paths. OpenAI's API takes keys only as `Authorization: Bearer`; a call there
-- that carries its key Gemini's way (x-goog-api-key, or ?key=) and no Authorization header is a Gemini
-- caller, and reads Gemini's model list: its path becomes /api/v1beta/models[/{model}] (query kept).
local OPENAI_MODELS = "/api/v1/models"
local GEMINI_MODELS = "/api/v1beta/models"

local function unescape(text)
  return (string.gsub(text, "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

local function has_query_key(query)
  for pair in string.gmatch(query or "", "[^&]+") do
    if unescape(string.match(pair, "^[^=]*")) == "key" then
      return true
    end
  end
  return false
end

local function is_gemini_models_call(headers, method, path, query)
  if method ~= "GET" or (path ~= OPENAI_MODELS and string.sub(path, 1, #OPENAI_MODELS + 1) ~= OPENAI_MODELS .. "/") then
    return false
  end
  return headers:get("authorization") == nil and (headers:get("x-goog-api-key") ~= nil or has_query_key(query))
end

-- Envoy's own 5xx (the server is not answering: starting, restarting, shutting down) tells the caller
-- when to come back on every surface, as the server's own 503s do: 5 s, the server's default wait when
-- no upstream can serve; the native API documents 60 s (NATIVE_RETRY_AFTER).
local LOCAL_RETRY_AFTER = "5"

-- `retry_after` (seconds, or nil): Google's RetryInfo detail, as the server's Gemini dialect adds it.
local function gemini_error_json(status, message, retry_after)
  local name = GEMINI_STATUS[status] or (tonumber(status) >= 500 and "INTERNAL" or "INVALID_ARGUMENT")
  local details = retry_after == nil and ""
    or ',"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"' .. retry_after .. 's"}]'
  return '{"error":{"code":' .. tonumber(status) .. ',"message":' .. json_string(message) .. ',"status":"'
    .. name .. '"' .. details .. '}}'
end

-- Gateway-native (/api/v1/ai/...): its error shape and codes, apart from the OpenAI shape above.
local NATIVE_PREFIX = "/api/v1/ai/"
local NATIVE_RETRY_AFTER = "60"
local NATIVE_CODES = {["400"] = "VALIDATION_ERROR", ["401"] = "UNAUTHORIZED", ["403"] = "FORBIDDEN",
  ["404"] = "NOT_FOUND", ["413"] = "INPUT_TOO_LARGE", ["414"] = "INPUT_TOO_LARGE", ["431"] = "INPUT_TOO_LARGE"}

local function native_error_json(code, message)
  return '{"error":{"code":' .. json_string(code) .. ',"message":' .. json_string(message) .. '}}'
end

-- The API's code for an Envoy reply of this status (a body Envoy could not read is INVALID_BODY).
local function native_code(status, details)
  if tonumber(status) >= 500 then
    return "SERVICE_UNAVAILABLE"
  end
  if status == "400" and (string.find(details, "transcode_failure", 1, true) ~= nil
      or string.find(details, "http1.", 1, true) == 1 or string.find(details, "http2.", 1, true) == 1) then
    return "INVALID_BODY"
  end
  return NATIVE_CODES[status] or "VALIDATION_ERROR"
end

-- Catalog and chat/send (/api/models, /api/categories, /api/v1/chat/send, /api/v1/chat/conversations):
-- their envelope, {"success": false, "message": "..."}, apart from the shapes above. Whatever is wrong
-- with a key, the API says "Invalid API key".
local ENVELOPE_PATHS = {"/api/models", "/api/categories", "/api/v1/chat/send", "/api/v1/chat/conversations"}

local function is_envelope_path(path)
  for _, prefix in ipairs(ENVELOPE_PATHS) do
    if path == prefix or string.sub(path, 1, #prefix + 1) == prefix .. "/" then
      return true
    end
  end
  return false
end

local function envelope_error_json(status, message)
  if status == "401" then
    message = "Invalid API key"
  end
  return '{"success":false,"message":' .. json_string(message) .. '}'
end

-- Header names as people write them (Authorization, X-Api-Key), for messages.
local function display_name(name)
  return CREDENTIAL_HEADERS[name] or string.gsub(name, "%f[%w]%l", string.upper)
end

local function metadata(handle)
  return handle:streamInfo():dynamicMetadata():get("modelway") or {}
end

-- Refuses the request here: a complete body for REST callers (the local
-- reply mapper passes it through), a gRPC status for native ones.
local function refuse(handle, status, grpc_status, message, kind, code)
  local headers = handle:headers()
  handle:streamInfo():dynamicMetadata():set("modelway", "edge_reply", true)
  if metadata(handle)["grpc"] == true then
    handle:respond({[":status"] = "200", ["content-type"] = "application/grpc", ["grpc-status"] = grpc_status,
      ["grpc-message"] = message, ["x-request-id"] = headers:get("x-request-id")}, "")
  elseif metadata(handle)["native"] == true then
    handle:respond({[":status"] = status, ["content-type"] = "application/json",
      ["x-request-id"] = headers:get("x-request-id")}, native_error_json(native_code(status, ""), message))
  elseif metadata(handle)["envelope"] == true then
    handle:respond({[":status"] = status, ["content-type"] = "application/json",
      ["x-request-id"] = headers:get("x-request-id")}, envelope_error_json(status, message))
  else
    local body = metadata(handle)["gemini"] == true and gemini_error_json(status, message)
      or error_json(message, kind, nil, code)
    handle:respond({[":status"] = status, ["content-type"] = "application/json",
      ["x-request-id"] = headers:get("x-request-id")}, body)
  end
end

-- The first problem with the request's URL or headers, as a refusal; nil when there is none.
local function check_headers(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or ""
  if #path > MAX_URL_BYTES then
    return {"414", "3", "The request URL is " .. #path .. " bytes long; at most " .. MAX_URL_BYTES
      .. " are accepted.", "invalid_request_error"}
  end
  local total = 0
  for name, value in pairs(headers) do
    total = total + #name + #value
    if #value > MAX_HEADER_VALUE_BYTES then
      return {"431", "3", "The " .. display_name(name) .. " header is " .. #value .. " bytes long; at most "
        .. MAX_HEADER_VALUE_BYTES .. " are accepted.", "invalid_request_error"}
    end
    if string.find(value, "[^\t -~]") ~= nil then
      -- Never echo the value: it may be a key.
      if CREDENTIAL_HEADERS[name] ~= nil then
        return {"401", "16", "The API key in the " .. display_name(name) .. " header contains a character "
          .. "that is not allowed (keys are visible ASCII); check that it was copied whole.",
          "authentication_error", "invalid_api_key"}
      end
      return {"400", "3", "The " .. display_name(name) .. " header contains a character that is not allowed: "
        .. "header values must be visible ASCII, spaces or tabs.", "invalid_request_error"}
    end
  end
  if total > MAX_HEADERS_BYTES then
    return {"431", "3", "The request headers are " .. total .. " bytes in all; at most " .. MAX_HEADERS_BYTES
      .. " are accepted.", "invalid_request_error"}
  end
  return nil
end

-- Drops the query parameters the route does not read (see ROUTE_QUERY); names are compared decoded,
-- so ?i%64=B is ?id=B.
local function keep_route_query(headers)
  local full = headers:get(":path") or ""
  local path, query = string.match(full, "^([^?]*)%?(.*)$")
  if query == nil then
    return
  end
  local method = headers:get(":method") or ""
  local allowed = ROUTE_QUERY[method .. " " .. path] or {}
  local gemini = is_gemini_path(method, path)
  local kept = {}
  for pair in string.gmatch(query, "[^&]+") do
    local name = unescape(string.match(pair, "^[^=]*"))
    if allowed[name] or (gemini and GEMINI_QUERY[name]) then
      table.insert(kept, pair)
    end
  end
  local rebuilt = #kept > 0 and path .. "?" .. table.concat(kept, "&") or path
  if rebuilt ~= full then
    headers:replace(":path", rebuilt)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local info = handle:streamInfo():dynamicMetadata()
  -- Whether the caller speaks gRPC is a property of the request: a transcoded
  -- unary error still says content-type application/grpc on the way back.
  local content_type = headers:get("content-type") or ""
  local is_grpc = string.find(content_type, "application/grpc", 1, true) == 1
  local full_path, query = string.match(headers:get(":path") or "", "^([^?]*)%??(.*)$")
  local path = string.sub(full_path, 1, 200)
  local gemini_models = not is_grpc and is_gemini_models_call(headers, headers:get(":method") or "", full_path, query)
  info:set("modelway", "grpc", is_grpc)
  info:set("modelway", "request", (headers:get(":method") or "") .. " " .. path)
  info:set("modelway", "gemini", gemini_models or is_gemini_path(headers:get(":method") or "", path))
  info:set("modelway", "health", HEALTH_PATHS[path] == true)
  info:set("modelway", "native", string.sub(path, 1, #NATIVE_PREFIX) == NATIVE_PREFIX)
  info:set("modelway", "envelope", is_envelope_path(path))
  info:set("modelway", "request_id", headers:get("x-request-id") or "")
  local problem = check_headers(handle)
  if problem ~= nil then
    refuse(handle, problem[1], problem[2], problem[3], problem[4], problem[5])
    return
  end
  if is_grpc then
    if string.sub(handle:streamInfo():protocol() or "", 1, 6) == "HTTP/1" then
      -- Envoy shapes this reply as a gRPC status (the caller said gRPC); it never reaches the server.
      refuse(handle, "415", "3", "gRPC needs HTTP/2; REST calls send a JSON body (Content-Type: application/json).",
        "invalid_request_error")
    end
    return
  end
  if gemini_models then
    -- (The access log then shows the Gemini path the call was served by.)
    headers:replace(":path", GEMINI_MODELS .. string.sub(headers:get(":path"), #OPENAI_MODELS + 1))
  end
  keep_route_query(headers)
  local plumbing = {}
  for name, _ in pairs(headers) do
    if string.sub(name, 1, 5) == "grpc-" or name == "te" then
      table.insert(plumbing, name)
    end
  end
  for _, name in ipairs(plumbing) do
    headers:remove(name)
  end
end

-- What each kind of Envoy reply means, by its response code details (the
-- text before any "{"), in the caller's words.
local function local_reply_message(status, details, request, original)
  if details == "request_payload_too_large" or status == "413" then
    return "The request body is larger than " .. MAX_BODY_MIB .. " MiB, the most this gateway accepts.",
      "request_too_large"
  end
  if details == "direct_response" or string.find(details, "transcode_failure", 1, true) ~= nil
      and string.find(original, "to a method", 1, true) ~= nil then
    return "Invalid URL (" .. request .. ")", nil
  end
  if status == "431" then
    return "The request headers are too large; at most " .. MAX_HEADERS_BYTES .. " bytes are accepted.", nil
  end
  if status == "414" then
    return "The request URL is too long; at most " .. MAX_URL_BYTES .. " bytes are accepted.", nil
  end
  if string.find(details, "transcode_failure", 1, true) ~= nil then
    -- Only the first line: the rest is a caret pointing into the body.
    return "We could not parse the JSON body of your request: " .. string.match(original, "^[^\n]*"), nil
  end
  if string.find(details, "http1.", 1, true) == 1 or string.find(details, "http2.", 1, true) == 1 then
    return "The request is not valid HTTP (" .. details .. ").", nil
  end
  if status == "503" or status == "502" or status == "504" then
    return "The gateway's server is not answering (it may be starting or shutting down); retry shortly.", nil
  end
  return original, nil
end

-- Gateway-native: Envoy's reply in the API's shape; a server that does not
-- answer is the documented 503 SERVICE_UNAVAILABLE with Retry-After: 60.
local function native_local_reply(handle, status, details, info, original)
  local headers = handle:headers()
  local message = local_reply_message(status, details, info["request"] or "", original)
  if tonumber(status) >= 500 then
    status = "503"
    headers:replace(":status", status)
    headers:replace("retry-after", NATIVE_RETRY_AFTER)
  end
  handle:body(true):setBytes(native_error_json(native_code(status, details), message))
end

-- What the caller sent, in the words of the server's own type errors, from the transcoder's rendering
-- of the value: "x" (quoted) is a string, true/false a boolean, anything else a number.
local function sent_kind(value)
  if string.sub(value, 1, 1) == '"' then
    return "a string"
  elseif value == "true" or value == "false" then
    return "a boolean"
  end
  return "a number"
end

-- A wrong value for one field, as the transcoder reports it ("name: invalid value 5 for type
-- TYPE_STRING", or a well-known type's full name): (field, message, code), or nil for anything else.
local function field_error(original)
  local field, value, proto_type = string.match(original,
    "^([%w_%.%[%]]+): invalid value (.-) for type (TYPE_[%u%d]+)$")
  if field ~= nil then
    local expected = FIELD_TYPES[proto_type] or "another type"
    local range = INTEGER_RANGES[proto_type]
    if range ~= nil and sent_kind(value) == "a number" then
      -- A number, but a fraction or out of range.
      return field, "Invalid value for '" .. field .. "': expected an integer from " .. range .. ".", "invalid_value"
    end
    return field, "Invalid type for '" .. field .. "': expected " .. expected .. ", but got " .. sent_kind(value)
      .. " instead.", "invalid_type"
  end
  local known
  field, value, known = string.match(original,
    "^([%w_%.%[%]]+): invalid value (.-) for type type%.googleapis%.com/google%.protobuf%.(%w+)$")
  if field ~= nil and known == "Timestamp" then
    local example = ", such as \"2026-01-31T00:00:00Z\"."
    if string.find(value, "Invalid data type", 1, true) ~= nil then
      return field, "Invalid type for '" .. field .. "': expected an RFC 3339 timestamp string" .. example,
        "invalid_type"
    end
    return field, "Invalid value for '" .. field .. "': expected an RFC 3339 timestamp" .. example, "invalid_value"
  elseif field ~= nil and known == "ListValue" then
    return field, "Invalid type for '" .. field .. "': expected an array, but got " .. sent_kind(value)
      .. " instead.", "invalid_type"
  end
  -- A prefix names the array the object was an item of (allowed_models: [{}]).
  local within
  within, field = string.match(original,
    "^([%w_%.%[%]]*): invalid value Starting an object on a scalar field for type ([%w_]+)$")
  if field ~= nil then
    local which = within == "" and "'" .. field .. "'" or "an item of '" .. field .. "'"
    return field, "Invalid type for " .. which .. ": expected a single value, but got an object instead.",
      "invalid_type"
  end
  -- An array for a single-valued field; the transcoder often leaves the field's name out ("" then).
  field = string.match(original, "^([%w_%.%[%]]*): Proto field is not repeating, cannot start list%.?$")
  if field ~= nil then
    local which = field ~= "" and "'" .. field .. "'" or "a field of the body"
    return field, "Invalid type for " .. which .. ": expected a single value, but got an array instead.",
      "invalid_type"
  end
  if string.match(original, "^[%w_%.%[%]]*: Proto fields must have a name%.?$") ~= nil then
    return "", "The request body has a field with an empty name (\"\").", "invalid_value"
  end
  return nil
end

local function refine_local_reply(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  local details = string.match(headers:get("x-modelway-details") or "", "^[^{]*")
  headers:remove("x-modelway-details")
  local info = metadata(handle)
  if info["edge_reply"] == true then
    return
  end
  local body = handle:body(true)
  local text = body:getBytes(0, body:length())
  if info["health"] == true and (status == "502" or status == "503" or status == "504") then
    -- The probe's own shape, for a probe that reached the route but not the operations port.
    body:setBytes('{"status":"unavailable","message":"The gateway\'s operations port is not answering."}')
    return
  end
  -- Envoy's own words (the mapper's JSON, or the bare text when Lua sees
  -- the reply before the mapper formats it).
  local original = string.match(text, '"message":"(.-)","param"') or text
  if info["native"] == true then
    native_local_reply(handle, status, details, info, original)
    return
  end
  local retry_after = nil
  if tonumber(status) >= 500 then
    retry_after = LOCAL_RETRY_AFTER
    -- Asked for again: the headers object taken before the body was read is out of scope now.
    handle:headers():replace("retry-after", retry_after)
  end
  if info["gemini"] == true then
    local message = local_reply_message(status, details, info["request"] or "", original)
    body:setBytes(gemini_error_json(status, message, retry_after))
    return
  end
  if info["envelope"] == true then
    body:setBytes(envelope_error_json(status, local_reply_message(status, details, info["request"] or "", original)))
    return
  end
  local kind = tonumber(status) >= 500 and "api_error" or "invalid_request_error"
  local field, message, code = field_error(original)
  if field ~= nil then
    body:setBytes(error_json(message, kind, field ~= "" and field or nil, code))
    return
  end
  local message, code = local_reply_message(status, details, info["request"] or "", original)
  body:setBytes(error_json(message, kind, nil, code))
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local info = metadata(handle)
  local status = headers:get("x-http-status")
  local error_json_header = headers:get("x-error-json")
  headers:remove("x-http-status")
  headers:remove("x-error-json")
  -- The server's id when it answered; Envoy's for Envoy's own replies.
  local local_reply = headers:get("x-modelway-local-reply") ~= nil
  if (local_reply or headers:get("x-request-id") == nil) and (info["request_id"] or "") ~= "" then
    headers:replace("x-request-id", info["request_id"])
  end
  if info["grpc"] == true then
    headers:remove("x-modelway-local-reply")
    headers:remove("x-modelway-details")
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
    if error_json_header ~= nil then
      handle:body(true):setBytes(error_json_header)
    end
  end
end
