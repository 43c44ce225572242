# confsum's enforcement framework for confidential container (CCE) policies.
#
# A CCE policy (as `az confcom` writes it) only lists what is allowed and
# delegates every decision to `data.framework.<rule>`. This module makes
# those decisions the way the utility VM's guest agent does: it follows the
# semantics of hcsshim's `pkg/securitypolicy/framework.rego` (framework
# 0.3.0, api 0.10.0), which is what policies with framework_version 0.2.3
# are checked against. It was written for confsum from those semantics;
# the tests run the same start-up sequences under hcsshim's own file and
# require the same decisions and the same metadata effects.
#
# State between calls lives in `data.metadata`. A rule never changes it
# itself: it returns `metadata` operations ({name, action, key, value}) and
# the caller (the Rust enforcer, as hcsshim's Go side does) applies them
# before the next call. Stores: devices (target -> layer hash), matches
# (container id -> the policy containers it may still be), overlayTargets,
# started (container id -> {privileged}), scratch_mounts, p9mounts and
# issuers (the fragments loaded so far).
#
# The Go side also provides: defaultMounts and privilegedMounts (mounts the
# guest adds to every, or every privileged, container), sandboxPrefix,
# hugePagesPrefix, plan9Prefix, and the default capability lists.
package framework

import rego.v1

version := "0.3.0"

############################################################################
# Versions of the policy and of its fragments
############################################################################

default policy_framework_version := null

policy_framework_version := data.policy.framework_version

# Older policies name versions `*_svn`.
policy_framework_version := data.policy.framework_svn

default policy_api_version := null

policy_api_version := data.policy.api_version

policy_api_version := data.policy.api_svn

default fragment_framework_version := null

fragment_framework_version := data[input.namespace].framework_version

fragment_framework_version := data[input.namespace].framework_svn

same_version(v) if semver.compare(v, version) == 0

older_version(v) if semver.compare(v, version) < 0

# Field `key` of `object` exists from framework `introduced` on; before it,
# the guest assumes `fallback`.
since(object, key, introduced, fallback, v) := object[key] if semver.compare(v, introduced) >= 0

since(_, _, introduced, fallback, v) := fallback if semver.compare(v, introduced) < 0

any_user := {
	"umask": "0022",
	"user_idname": {"pattern": "", "strategy": "any"},
	"group_idnames": [{"pattern": "", "strategy": "any"}],
}

# A container of an older policy, with the fields a newer one has. A
# container that lacks a base field has no normalized form and is ignored.
normalized("container", c, v) := {
	"command": c.command,
	"env_rules": c.env_rules,
	"layers": c.layers,
	"mounts": c.mounts,
	"allow_elevated": c.allow_elevated,
	"working_dir": c.working_dir,
	"exec_processes": c.exec_processes,
	"signals": c.signals,
	"allow_stdio_access": c.allow_stdio_access,
	"no_new_privileges": since(c, "no_new_privileges", "0.2.0", false, v),
	"user": since(c, "user", "0.2.1", any_user, v),
	"capabilities": since(c, "capabilities", "0.2.2", null, v),
	"seccomp_profile_sha256": since(c, "seccomp_profile_sha256", "0.2.3", "", v),
}

normalized("external_process", p, _) := {
	"command": p.command,
	"env_rules": p.env_rules,
	"working_dir": p.working_dir,
	"allow_stdio_access": p.allow_stdio_access,
}

normalized("fragment", f, _) := {
	"issuer": f.issuer,
	"feed": f.feed,
	"minimum_svn": f.minimum_svn,
	"includes": f.includes,
}

# `items` (a list the policy or a fragment declares) as this framework
# reads it. Undefined when `v` is newer than this framework, or missing.
upgraded(_, items, v) := items if same_version(v)

upgraded(kind, items, v) := [n | some item in items; n := normalized(kind, item, v)] if older_version(v)

############################################################################
# What the policy and the loaded fragments allow
############################################################################

# Everything loaded fragments contributed, one list per kind.
loaded(kind) := [item |
	some issuer in data.metadata.issuers
	some feed in issuer.feeds
	some fragment in feed
	some item in fragment[kind]
]

default candidate_containers := []

candidate_containers := array.concat(upgraded("container", data.policy.containers, policy_framework_version), loaded("containers")) if {
	older_version(policy_framework_version)
}

candidate_containers := array.concat(declared_containers, loaded("containers")) if {
	same_version(policy_framework_version)
}

declared_containers := [c | some c in data.policy.containers]

default candidate_external_processes := []

candidate_external_processes := array.concat(upgraded("external_process", data.policy.external_processes, policy_framework_version), loaded("external_processes")) if {
	older_version(policy_framework_version)
}

candidate_external_processes := array.concat(declared_external_processes, loaded("external_processes")) if {
	same_version(policy_framework_version)
}

declared_external_processes := [p | some p in data.policy.external_processes]

default candidate_fragments := []

candidate_fragments := array.concat(upgraded("fragment", data.policy.fragments, policy_framework_version), loaded("fragments")) if {
	older_version(policy_framework_version)
}

candidate_fragments := array.concat(declared_fragments, loaded("fragments")) if {
	same_version(policy_framework_version)
}

declared_fragments := [f | some f in data.policy.fragments]

# The policy's switches. A missing switch is undefined, which denies.
allow_properties_access := data.policy.allow_properties_access

allow_dump_stacks := data.policy.allow_dump_stacks

allow_runtime_logging := data.policy.allow_runtime_logging

allow_environment_variable_dropping := data.policy.allow_environment_variable_dropping

allow_unencrypted_scratch := data.policy.allow_unencrypted_scratch

# Capability dropping came with framework 0.2.2; older policies never drop.
default allow_capability_dropping := false

allow_capability_dropping := data.policy.allow_capability_dropping if {
	semver.compare(policy_framework_version, "0.2.2") >= 0
}

############################################################################
# State kept between calls
############################################################################

device_at(target) if data.metadata.devices[target]

overlay_for(id) if data.metadata.matches[id]

overlay_at(target) if data.metadata.overlayTargets[target]

started(id) if data.metadata.started[id]

scratch_at(target) if data.metadata.scratch_mounts[target]

plan9_at(target) if data.metadata.p9mounts[target]

default started_privileged := false

started_privileged if data.metadata.started[input.containerID].privileged

# The policy containers an overlay matched and later calls did not rule out.
default candidates := []

candidates := data.metadata.matches[input.containerID]

############################################################################
# Layers and overlays
############################################################################

known_layer(hash) if {
	some c in data.policy.containers
	hash in c.layers
}

known_layer(hash) if {
	some c in loaded("containers")
	hash in c.layers
}

default mount_device := {"allowed": false}

mount_device := {"metadata": [added], "allowed": true} if {
	not device_at(input.target)
	known_layer(input.deviceHash)
	added := {"name": "devices", "action": "add", "key": input.target, "value": input.deviceHash}
}

default unmount_device := {"allowed": false}

unmount_device := {"metadata": [removed], "allowed": true} if {
	device_at(input.unmountTarget)
	removed := {"name": "devices", "action": "remove", "key": input.unmountTarget}
}

# The guest lists layer paths top layer first; policies list layers base
# layer first.
layers_in_order(layers) if {
	n := count(layers)
	count(input.layerPaths) == n
	every i, path in input.layerPaths {
		layers[(n - 1) - i] == data.metadata.devices[path]
	}
}

overlay_matches := [c | some c in candidate_containers; layers_in_order(c.layers)]

default mount_overlay := {"allowed": false}

mount_overlay := {"metadata": [matched, target], "allowed": true} if {
	not overlay_for(input.containerID)
	count(overlay_matches) > 0
	matched := {"name": "matches", "action": "add", "key": input.containerID, "value": overlay_matches}
	target := {"name": "overlayTargets", "action": "add", "key": input.target, "value": true}
}

default unmount_overlay := {"allowed": false}

unmount_overlay := {"metadata": [removed], "allowed": true} if {
	overlay_at(input.unmountTarget)
	removed := {"name": "overlayTargets", "action": "remove", "key": input.unmountTarget}
}

############################################################################
# Checks on one container (or process) of the policy
############################################################################

command_ok(command) if {
	count(input.argList) == count(command)
	every i, arg in input.argList {
		command[i] == arg
	}
}

env_ok(pattern, "string", value) if pattern == value

env_ok(pattern, "re2", value) if regex.match(pattern, value)

# Every rule is met (a rule that is not required is met by any variable,
# but only if there is one), and every variable is allowed by some rule.
env_list_ok(rules, envs) if {
	every rule in rules {
		some env in envs
		rule_met(rule, env)
	}
	every env in envs {
		some rule in rules
		env_ok(rule.pattern, rule.strategy, env)
	}
}

rule_met(rule, _) if not rule.required

rule_met(rule, env) if {
	rule.required
	env_ok(rule.pattern, rule.strategy, env)
}

# The request's variables that some rule allows.
allowed_envs(rules) := {env |
	some env in input.envList
	some rule in rules
	env_ok(rule.pattern, rule.strategy, env)
}

# The variables the guest passes on. With dropping, the unmatched ones go,
# judged against the most specific candidates (those that keep the most);
# if they disagree on which to keep, nothing is decided.
env_to_keep(items) := keep if {
	allow_environment_variable_dropping
	kept := [envs | some item in items; envs := allowed_envs(item.env_rules)]
	sizes := [count(envs) | some envs in kept]
	most := max(sizes)
	widest := {kept[i] | some i; sizes[i] == most}
	keep := intersection(widest)
	keep == union(widest)
}

env_to_keep(_) := input.envList if not allow_environment_variable_dropping

working_dir_ok(dir) if input.workingDir == dir

privilege_ok(_) if not input.privileged

privilege_ok(elevation_allowed) if {
	input.privileged
	input.privileged == elevation_allowed
}

no_new_privileges_ok(required) if {
	required
	input.noNewPrivileges
}

no_new_privileges_ok(required) if required == false

id_ok(_, "any", _) := true

id_ok(pattern, "id", value) if pattern == value.id

id_ok(pattern, "name", value) if pattern == value.name

id_ok(pattern, "re2", value) if regex.match(pattern, value.name)

user_ok(user) if {
	user.umask == input.umask
	id_ok(user.user_idname.pattern, user.user_idname.strategy, input.user)
	every group in input.groups {
		some allowed in user.group_idnames
		id_ok(allowed.pattern, allowed.strategy, group)
	}
}

seccomp_ok(profile_sha256) if input.seccompProfileSHA256 == profile_sha256

# Mount sources: `sandbox://` and `hugepages://` are regular expressions
# under the pod's directories; `plan9://` is a share mounted for this
# container; anything else must be equal.
source_ok(allowed, source) if {
	startswith(allowed, data.sandboxPrefix)
	regex.match(replace(allowed, data.sandboxPrefix, input.sandboxDir), source)
}

source_ok(allowed, source) if {
	startswith(allowed, data.hugePagesPrefix)
	regex.match(replace(allowed, data.hugePagesPrefix, input.hugePagesDir), source)
}

source_ok(allowed, source) if {
	startswith(allowed, data.plan9Prefix)
	some share, owner in data.metadata.p9mounts
	source == share
	input.containerID == owner
}

source_ok(allowed, source) if allowed == source

mount_fits(allowed, mount) if {
	mount.type == allowed.type
	source_ok(allowed.source, mount.source)
	mount.destination != ""
	mount.destination == allowed.destination
	count(mount.options) == count(allowed.options)
	every option in mount.options {
		option in allowed.options
	}
	every option in allowed.options {
		option in mount.options
	}
}

mount_ok(allowed_mounts, _, mount) if {
	some allowed in allowed_mounts
	mount_fits(allowed, mount)
}

mount_ok(_, _, mount) if {
	some allowed in data.defaultMounts
	mount_fits(allowed, mount)
}

mount_ok(_, elevation_allowed, mount) if {
	elevation_allowed
	some allowed in data.privilegedMounts
	mount_fits(allowed, mount)
}

mounts_ok(allowed_mounts, elevation_allowed) if {
	every mount in input.mounts {
		mount_ok(allowed_mounts, elevation_allowed, mount)
	}
}

############################################################################
# Capabilities
############################################################################

cap_set_ok(allowed, requested) if {
	count(allowed) == count(requested)
	every cap in requested {
		cap in allowed
	}
	every cap in allowed {
		cap in requested
	}
}

caps_ok(allowed, requested) if {
	cap_set_ok(allowed.bounding, requested.bounding)
	cap_set_ok(allowed.effective, requested.effective)
	cap_set_ok(allowed.inheritable, requested.inheritable)
	cap_set_ok(allowed.permitted, requested.permitted)
	cap_set_ok(allowed.ambient, requested.ambient)
}

default_caps(true) := {
	"bounding": caps,
	"effective": caps,
	"inheritable": caps,
	"permitted": caps,
	"ambient": set(),
} if {
	caps := {cap | some cap in data.defaultPrivilegedCapabilities}
}

default_caps(false) := {
	"bounding": caps,
	"effective": caps,
	"inheritable": set(),
	"permitted": caps,
	"ambient": set(),
} if {
	caps := {cap | some cap in data.defaultUnprivilegedCapabilities}
}

# A container's capabilities; policies older than 0.2.2 have none, and the
# guest's defaults apply (the privileged ones only to an elevated container
# that asks to be privileged).
capabilities_of(c, _) := c.capabilities if c.capabilities != null

capabilities_of(c, privileged) := default_caps(privileged) if {
	c.capabilities == null
	c.allow_elevated
}

capabilities_of(c, _) := default_caps(false) if {
	c.capabilities == null
	not c.allow_elevated
}

granted(allowed, requested) := {cap | some cap in requested; cap in allowed}

granted_caps(allowed) := {
	"bounding": granted(allowed.bounding, input.capabilities.bounding),
	"effective": granted(allowed.effective, input.capabilities.effective),
	"inheritable": granted(allowed.inheritable, input.capabilities.inheritable),
	"permitted": granted(allowed.permitted, input.capabilities.permitted),
	"ambient": granted(allowed.ambient, input.capabilities.ambient),
}

caps_size(caps) := (((count(caps.bounding) + count(caps.effective)) + count(caps.inheritable)) + count(caps.permitted)) + count(caps.ambient)

# The largest grants, which must all be the same.
widest_grants(containers, privileged) := [grants[i] | some i; sizes[i] == most] if {
	grants := [g | some c in containers; g := granted_caps(capabilities_of(c, privileged))]
	sizes := [caps_size(g) | some g in grants]
	most := max(sizes)
}

agreed(family) := common if {
	common := intersection(family)
	common == union(family)
}

same_grants(grants) := {
	"bounding": agreed({g.bounding | some g in grants}),
	"effective": agreed({g.effective | some g in grants}),
	"inheritable": agreed({g.inheritable | some g in grants}),
	"permitted": agreed({g.permitted | some g in grants}),
	"ambient": agreed({g.ambient | some g in grants}),
}

# The capabilities the guest grants. With dropping, those no candidate
# allows go (the most generous candidates decide); without, the request
# stands as it is and must match exactly.
caps_to_keep(containers, privileged) := same_grants(widest_grants(containers, privileged)) if {
	allow_capability_dropping
}

caps_to_keep(_, _) := input.capabilities if not allow_capability_dropping

############################################################################
# Creating containers and running processes in them
############################################################################

create_matches := [c |
	some c in candidates
	no_new_privileges_ok(c.no_new_privileges)
	user_ok(c.user)
	privilege_ok(c.allow_elevated)
	working_dir_ok(c.working_dir)
	command_ok(c.command)
	mounts_ok(c.mounts, c.allow_elevated)
	seccomp_ok(c.seccomp_profile_sha256)
]

create_env := env_to_keep(create_matches)

create_env_matches := [c | some c in create_matches; env_list_ok(c.env_rules, create_env)]

create_caps := caps_to_keep(create_env_matches, input.privileged)

create_final := [c | some c in create_env_matches; caps_ok(capabilities_of(c, input.privileged), create_caps)]

# Stdio access cannot narrow the candidates: they must all agree on it.
create_stdio := stdio if {
	stdio := create_final[0].allow_stdio_access
	every c in create_final {
		c.allow_stdio_access == stdio
	}
}

default create_container := {"allowed": false}

create_container := {
	"metadata": [narrowed, now_started],
	"env_list": create_env,
	"caps_list": create_caps,
	"allow_stdio_access": create_stdio,
	"allowed": true,
} if {
	not started(input.containerID)
	count(create_matches) > 0
	count(create_env_matches) > 0
	count(create_final) > 0
	narrowed := {"name": "matches", "action": "update", "key": input.containerID, "value": create_final}
	now_started := {
		"name": "started", "action": "add", "key": input.containerID,
		"value": {"privileged": input.privileged},
	}
}

# One entry per process of a candidate that the command matches.
exec_matches := [c |
	some c in candidates
	working_dir_ok(c.working_dir)
	no_new_privileges_ok(c.no_new_privileges)
	user_ok(c.user)
	some process in c.exec_processes
	command_ok(process.command)
]

exec_env := env_to_keep(exec_matches)

exec_env_matches := [c | some c in exec_matches; env_list_ok(c.env_rules, exec_env)]

exec_caps := caps_to_keep(exec_env_matches, started_privileged)

exec_final := [c | some c in exec_env_matches; caps_ok(capabilities_of(c, started_privileged), exec_caps)]

default exec_in_container := {"allowed": false}

exec_in_container := {
	"metadata": [narrowed],
	"env_list": exec_env,
	"caps_list": exec_caps,
	"allowed": true,
} if {
	started(input.containerID)
	count(exec_matches) > 0
	count(exec_env_matches) > 0
	count(exec_final) > 0
	narrowed := {"name": "matches", "action": "update", "key": input.containerID, "value": exec_final}
}

external_matches := [p |
	some p in candidate_external_processes
	working_dir_ok(p.working_dir)
	command_ok(p.command)
]

external_env := env_to_keep(external_matches)

external_final := [p | some p in external_matches; env_list_ok(p.env_rules, external_env)]

external_stdio := stdio if {
	stdio := external_final[0].allow_stdio_access
	every p in external_final {
		p.allow_stdio_access == stdio
	}
}

default exec_external := {"allowed": false}

exec_external := {"allowed": true, "allow_stdio_access": external_stdio, "env_list": external_env} if {
	count(external_matches) > 0
	count(external_final) > 0
}

default shutdown_container := {"allowed": false}

# The container stays "started": its id cannot be created again.
shutdown_container := {"metadata": [removed], "allowed": true} if {
	started(input.containerID)
	removed := {"name": "matches", "action": "remove", "key": input.containerID}
}

# The init process takes the container's signals; any other process the
# signals of the exec process whose command it runs.
signal_targets := [c | some c in candidates; input.signal in c.signals] if input.isInitProcess

signal_targets := [c |
	some c in candidates
	some process in c.exec_processes
	command_ok(process.command)
	input.signal in process.signals
] if not input.isInitProcess

default signal_container_process := {"allowed": false}

signal_container_process := {"metadata": [narrowed], "allowed": true} if {
	started(input.containerID)
	count(signal_targets) > 0
	narrowed := {"name": "matches", "action": "update", "key": input.containerID, "value": signal_targets}
}

############################################################################
# Plan9 shares, scratch, and the guest's own services
############################################################################

default plan9_mount := {"allowed": false}

plan9_mount := {"metadata": [added], "allowed": true} if {
	not plan9_at(input.target)
	some id, _ in data.metadata.matches
	regex.match(concat("", [input.rootPrefix, "/", id, input.mountPathPrefix]), input.target)
	added := {"name": "p9mounts", "action": "add", "key": input.target, "value": id}
}

default plan9_unmount := {"allowed": false}

plan9_unmount := {"metadata": [removed], "allowed": true} if {
	plan9_at(input.unmountTarget)
	removed := {"name": "p9mounts", "action": "remove", "key": input.unmountTarget}
}

scratch_allowed if allow_unencrypted_scratch

scratch_allowed if {
	not allow_unencrypted_scratch
	input.encrypted
}

default scratch_mount := {"allowed": false}

scratch_mount := {"metadata": [added], "allowed": true} if {
	not scratch_at(input.target)
	scratch_allowed
	added := {"name": "scratch_mounts", "action": "add", "key": input.target, "value": {"encrypted": input.encrypted}}
}

default scratch_unmount := {"allowed": false}

scratch_unmount := {"metadata": [removed], "allowed": true} if {
	scratch_at(input.unmountTarget)
	removed := {"name": "scratch_mounts", "action": "remove", "key": input.unmountTarget}
}

default get_properties := {"allowed": false}

get_properties := {"allowed": true} if allow_properties_access

default dump_stacks := {"allowed": false}

dump_stacks := {"allowed": true} if allow_dump_stacks

default runtime_logging := {"allowed": false}

runtime_logging := {"allowed": true} if allow_runtime_logging

############################################################################
# Fragments
############################################################################

default fragment_containers := []

fragment_containers := data[input.namespace].containers

default fragment_fragments := []

fragment_fragments := data[input.namespace].fragments

default fragment_external_processes := []

fragment_external_processes := data[input.namespace].external_processes

# What a fragment brings, limited to what the policy lets it include.
fragment_contents(includes) := {kind: parts[kind] | some kind in includes} if {
	v := fragment_framework_version
	parts := {
		"containers": upgraded("container", fragment_containers, v),
		"fragments": upgraded("fragment", fragment_fragments, v),
		"external_processes": upgraded("external_process", fragment_external_processes, v),
	}
}

# SVNs are numbers; older fragments used semantic versions.
svn_ok(svn, minimum) if {
	semver.is_valid(svn)
	semver.is_valid(minimum)
	semver.compare(svn, minimum) >= 0
}

svn_ok(svn, minimum) if to_number(svn) >= to_number(minimum)

# The issuer's entry after the load: the newest fragment of a feed first.
issuer_after(includes) := object.union(old, {"feeds": {input.feed: array.concat([fragment_contents(includes)], old.feeds[input.feed])}}) if {
	old := data.metadata.issuers[input.issuer]
	old.feeds[input.feed]
}

issuer_after(includes) := object.union(old, {"feeds": {input.feed: [fragment_contents(includes)]}}) if {
	old := data.metadata.issuers[input.issuer]
	not old.feeds[input.feed]
}

issuer_after(includes) := {"feeds": {input.feed: [fragment_contents(includes)]}} if {
	not data.metadata.issuers[input.issuer]
}

fragment_allowed(f) if {
	f.issuer == input.issuer
	f.feed == input.feed
	svn_ok(data[input.namespace].svn, f.minimum_svn)
}

default load_fragment := {"allowed": false}

load_fragment := {"metadata": [updated], "add_module": add_module, "allowed": true} if {
	some f in candidate_fragments
	fragment_allowed(f)
	add_module := "namespace" in f.includes
	updated := {"name": "issuers", "action": "update", "key": input.issuer, "value": issuer_after(f.includes)}
}

############################################################################
# Enforcement points: which rules a policy of a given api version must
# define, and what the guest assumes for those it may leave out.
############################################################################

api_version := "0.10.0"

enforcement_points := {
	"mount_device": {"since": "0.1.0", "defaults": {"allowed": false}},
	"mount_overlay": {"since": "0.1.0", "defaults": {"allowed": false}},
	"create_container": {"since": "0.1.0", "defaults": {"allowed": false, "env_list": null, "allow_stdio_access": false}},
	"unmount_device": {"since": "0.2.0", "defaults": {"allowed": true}},
	"exec_in_container": {"since": "0.2.0", "defaults": {"allowed": true, "env_list": null}},
	"exec_external": {"since": "0.3.0", "defaults": {"allowed": true, "env_list": null, "allow_stdio_access": false}},
	"shutdown_container": {"since": "0.4.0", "defaults": {"allowed": true}},
	"signal_container_process": {"since": "0.5.0", "defaults": {"allowed": true}},
	"unmount_overlay": {"since": "0.6.0", "defaults": {"allowed": true}},
	"plan9_mount": {"since": "0.6.0", "defaults": {"allowed": true}},
	"plan9_unmount": {"since": "0.6.0", "defaults": {"allowed": true}},
	"get_properties": {"since": "0.7.0", "defaults": {"allowed": true}},
	"dump_stacks": {"since": "0.7.0", "defaults": {"allowed": true}},
	"runtime_logging": {"since": "0.8.0", "defaults": {"allowed": true}},
	"load_fragment": {"since": "0.9.0", "defaults": {"allowed": false, "add_module": false}},
	"scratch_mount": {"since": "0.10.0", "defaults": {"allowed": true}},
	"scratch_unmount": {"since": "0.10.0", "defaults": {"allowed": true}},
}

default enforcement_point_info := {
	"available": false, "default_results": {"allow": false},
	"unknown": true, "invalid": false, "version_missing": false,
}

enforcement_point_info := {
	"available": false, "default_results": {"allow": false},
	"unknown": false, "invalid": false, "version_missing": true,
} if policy_api_version == null

enforcement_point_info := {
	"available": available, "default_results": point.defaults,
	"unknown": false, "invalid": false, "version_missing": false,
} if {
	policy_api_version != null
	point := enforcement_points[input.name]
	semver.compare(api_version, point.since) >= 0
	available := semver.compare(policy_api_version, point.since) >= 0
}

enforcement_point_info := {
	"available": false, "default_results": {"allow": false},
	"unknown": false, "invalid": true, "version_missing": false,
} if {
	point := enforcement_points[input.name]
	semver.compare(api_version, point.since) < 0
}

############################################################################
# Why a request was denied. The caller sets input.rule. Each message says
# which property of the request no remaining candidate allows.
############################################################################

errors contains "deviceHash not found" if {
	input.rule == "mount_device"
	not known_layer(input.deviceHash)
}

errors contains "device already mounted at path" if {
	input.rule == "mount_device"
	device_at(input.target)
}

errors contains "device already mounted at path" if {
	input.rule == "plan9_mount"
	plan9_at(input.target)
}

errors contains "no device at path to unmount" if {
	input.rule == "unmount_device"
	not device_at(input.unmountTarget)
}

errors contains "no device at path to unmount" if {
	input.rule == "plan9_unmount"
	not plan9_at(input.unmountTarget)
}

errors contains "overlay has already been mounted" if {
	input.rule == "mount_overlay"
	overlay_for(input.containerID)
}

errors contains "no matching containers for overlay" if {
	input.rule == "mount_overlay"
	count(overlay_matches) == 0
}

errors contains "no overlay at path to unmount" if {
	input.rule == "unmount_overlay"
	not overlay_at(input.unmountTarget)
}

errors contains "container already started" if {
	input.rule == "create_container"
	started(input.containerID)
}

errors contains "container not started" if {
	input.rule in {"exec_in_container", "shutdown_container", "signal_container_process"}
	not started(input.containerID)
}

# Requests about a container that may run (create) or runs (exec).
container_request if {
	input.rule == "create_container"
	not started(input.containerID)
}

container_request if {
	input.rule == "exec_in_container"
	started(input.containerID)
}

errors contains "privileged escalation not allowed" if {
	input.rule == "create_container"
	container_request
	not some_candidate_privilege_ok
}

some_candidate_privilege_ok if {
	some c in candidates
	privilege_ok(c.allow_elevated)
}

errors contains "invalid command" if {
	container_request
	input.rule == "create_container"
	not some_candidate_command_ok
}

some_candidate_command_ok if {
	some c in candidates
	command_ok(c.command)
}

errors contains "invalid command" if {
	container_request
	input.rule == "exec_in_container"
	not some_candidate_process_ok
}

some_candidate_process_ok if {
	some c in candidates
	some process in c.exec_processes
	command_ok(process.command)
}

errors contains "invalid command" if {
	input.rule == "exec_external"
	not some_external_command_ok
}

some_external_command_ok if {
	some p in candidate_external_processes
	command_ok(p.command)
}

errors contains "invalid working directory" if {
	container_request
	not some_candidate_dir_ok
}

some_candidate_dir_ok if {
	some c in candidates
	working_dir_ok(c.working_dir)
}

errors contains "invalid working directory" if {
	input.rule == "exec_external"
	not some_external_dir_ok
}

some_external_dir_ok if {
	some p in candidate_external_processes
	working_dir_ok(p.working_dir)
}

errors contains "invalid noNewPrivileges" if {
	container_request
	not some_candidate_nnp_ok
}

some_candidate_nnp_ok if {
	some c in candidates
	no_new_privileges_ok(c.no_new_privileges)
}

errors contains "invalid user" if {
	container_request
	not some_candidate_user_ok
}

some_candidate_user_ok if {
	some c in candidates
	user_ok(c.user)
}

errors contains "invalid seccomp" if {
	input.rule == "create_container"
	container_request
	not some_candidate_seccomp_ok
}

some_candidate_seccomp_ok if {
	some c in candidates
	seccomp_ok(c.seccomp_profile_sha256)
}

mount_allowed_somewhere(mount) if {
	some c in candidates
	mount_ok(c.mounts, c.allow_elevated, mount)
}

errors contains concat(" ", ["invalid mount list:", concat(",", bad)]) if {
	input.rule == "create_container"
	container_request
	bad := [mount.destination | some mount in input.mounts; not mount_allowed_somewhere(mount)]
	count(bad) > 0
}

# Variables no rule allows. Only a reason when the policy does not let the
# guest drop them.
env_allowed_somewhere(env) if {
	input.rule in {"create_container", "exec_in_container"}
	some c in candidates
	some rule in c.env_rules
	env_ok(rule.pattern, rule.strategy, env)
}

env_allowed_somewhere(env) if {
	input.rule == "exec_external"
	some p in candidate_external_processes
	some rule in p.env_rules
	env_ok(rule.pattern, rule.strategy, env)
}

env_request if container_request

env_request if input.rule == "exec_external"

errors contains concat(" ", ["invalid env list:", concat(",", bad)]) if {
	env_request
	not allow_environment_variable_dropping
	bad := [name | some env in input.envList; not env_allowed_somewhere(env); name := split(env, "=")[0]]
	count(bad) > 0
}

env_rule_met_by_request(rule) if {
	some env in input.envList
	env_ok(rule.pattern, rule.strategy, env)
}

lacks_required_env(item) if {
	some rule in item.env_rules
	rule.required
	not env_rule_met_by_request(rule)
}

errors contains "missing required environment variable" if {
	input.rule == "create_container"
	container_request
	count(create_matches) > 0
	count(create_env_matches) == 0
	some c in create_matches
	lacks_required_env(c)
}

errors contains "missing required environment variable" if {
	input.rule == "exec_in_container"
	container_request
	count(exec_matches) > 0
	count(exec_env_matches) == 0
	some c in exec_matches
	lacks_required_env(c)
}

errors contains "missing required environment variable" if {
	input.rule == "exec_external"
	count(external_matches) > 0
	count(external_final) == 0
	some p in external_matches
	lacks_required_env(p)
}

# When neither of the above explains it: an empty list (every rule needs
# some variable), or candidates that would keep different variables.
env_unexplained(matches, narrowed) if {
	count(matches) > 0
	count(narrowed) == 0
	not some_lacks_required_env(matches)
	not some_env_unallowed
}

some_lacks_required_env(items) if {
	some item in items
	lacks_required_env(item)
}

some_env_unallowed if {
	not allow_environment_variable_dropping
	some env in input.envList
	not env_allowed_somewhere(env)
}

errors contains "environment variables fit no candidate's env_rules" if {
	input.rule == "create_container"
	container_request
	env_unexplained(create_matches, create_env_matches)
}

errors contains "environment variables fit no candidate's env_rules" if {
	input.rule == "exec_in_container"
	container_request
	env_unexplained(exec_matches, exec_env_matches)
}

errors contains "environment variables fit no candidate's env_rules" if {
	input.rule == "exec_external"
	env_unexplained(external_matches, external_final)
}

errors contains "capabilities don't match" if {
	input.rule == "create_container"
	container_request
	count(create_env_matches) > 0
	create_caps
	count(create_final) == 0
}

errors contains "capabilities don't match" if {
	input.rule == "exec_in_container"
	container_request
	count(exec_env_matches) > 0
	exec_caps
	count(exec_final) == 0
}

# The spelling is the guest's.
errors contains "containers only distinguishable by capabilties" if {
	input.rule == "create_container"
	container_request
	allow_capability_dropping
	count(create_env_matches) > 0
	widest := widest_grants(create_env_matches, input.privileged)
	not same_grants(widest)
}

errors contains "containers only distinguishable by allow_stdio_access" if {
	input.rule == "create_container"
	container_request
	count(create_final) > 0
	not create_stdio
}

errors contains "external processes only distinguishable by allow_stdio_access" if {
	input.rule == "exec_external"
	count(external_final) > 0
	not external_stdio
}

errors contains "target isn't allowed to receive the signal" if {
	input.rule == "signal_container_process"
	started(input.containerID)
	count(signal_targets) == 0
}

errors contains "unencrypted scratch not allowed" if {
	input.rule == "scratch_mount"
	not scratch_allowed
}

errors contains "scratch already mounted at path" if {
	input.rule == "scratch_mount"
	scratch_at(input.target)
}

errors contains "no scratch at path to unmount" if {
	input.rule == "scratch_unmount"
	not scratch_at(input.unmountTarget)
}

# The guest gives no reason for these; confsum names the switch.
errors contains "properties access not allowed (allow_properties_access)" if {
	input.rule == "get_properties"
	not allow_properties_access
}

errors contains "dumping stacks not allowed (allow_dump_stacks)" if {
	input.rule == "dump_stacks"
	not allow_dump_stacks
}

errors contains "runtime logging not allowed (allow_runtime_logging)" if {
	input.rule == "runtime_logging"
	not allow_runtime_logging
}

fragment_issuer_known if {
	some f in candidate_fragments
	f.issuer == input.issuer
}

fragment_feed_known if {
	some f in candidate_fragments
	f.issuer == input.issuer
	f.feed == input.feed
}

errors contains "invalid fragment issuer" if {
	input.rule == "load_fragment"
	not fragment_issuer_known
}

errors contains "invalid fragment feed" if {
	input.rule == "load_fragment"
	fragment_issuer_known
	not fragment_feed_known
}

fragment_svn_ok if {
	some f in candidate_fragments
	fragment_allowed(f)
}

# One side is a number, the other a semantic version.
svn_kinds_differ if {
	some f in candidate_fragments
	f.issuer == input.issuer
	f.feed == input.feed
	to_number(data[input.namespace].svn)
	semver.is_valid(f.minimum_svn)
}

svn_kinds_differ if {
	some f in candidate_fragments
	f.issuer == input.issuer
	f.feed == input.feed
	semver.is_valid(data[input.namespace].svn)
	to_number(f.minimum_svn)
}

errors contains "fragment svn is below the specified minimum" if {
	input.rule == "load_fragment"
	fragment_feed_known
	not svn_kinds_differ
	not fragment_svn_ok
}

errors contains "fragment svn and the specified minimum are different types" if {
	input.rule == "load_fragment"
	fragment_feed_known
	svn_kinds_differ
}

errors contains concat(" ", ["framework_version is missing. Current version:", version]) if {
	policy_framework_version == null
}

errors contains concat(" ", ["framework_version is ahead of the current version:", policy_framework_version, "is greater than", version]) if {
	semver.compare(policy_framework_version, version) > 0
}

errors contains concat(" ", ["fragment framework_version is missing. Current version:", version]) if {
	input.rule == "load_fragment"
	fragment_framework_version == null
}

errors contains concat(" ", ["fragment framework_version is ahead of the current version:", fragment_framework_version, "is greater than", version]) if {
	input.rule == "load_fragment"
	semver.compare(fragment_framework_version, version) > 0
}
