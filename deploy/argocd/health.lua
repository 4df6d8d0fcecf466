-- Argo CD health check for pitstop.dev/MaintenancePlan: without one, Argo CD shows every
-- plan Healthy, a running or failed one too. Install it in argocd-cm under
--   resource.customizations.health.pitstop.dev_MaintenancePlan
-- (see deploy/argocd/README.md). It reads the kstatus conditions the controller writes
-- (Ready, Reconciling, Stalled, each with observedGeneration), as Flux and kubectl wait do.
local hs = {}

local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function message(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if obj.status ~= nil and obj.status.message ~= nil then
    return obj.status.message
  end
  return default
end

local function health(status, text)
  hs.status = status
  hs.message = text
  return hs
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  return health("Progressing", "waiting for the pitstop controller to take up this version of the plan")
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return health("Degraded", message(stalled, "the plan cannot go on"))
end

if obj.status.phase == "Suspended" then
  return health("Suspended", message(nil, "suspended"))
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return health("Healthy", message(ready, ""))
end

return health("Progressing", message(condition("Reconciling"), "in progress"))
