// optin: the libsrtp3 API that mediasoup 3.27 calls, implemented on Debian's libsrtp2.
//
// libsrtp3 changed three things the worker relies on: the policy became an opaque
// handle built by setters, protect/unprotect take separate input and output buffers
// with size_t lengths, and stream removal was renamed. Everything else (profiles,
// ssrc types, events, init/shutdown) is the same in 2.x. The shims below are macros
// over static inline functions so that the libsrtp2 names stay callable underneath.
#pragma once
#include <srtp2/srtp.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <climits>

// Error codes that libsrtp2 lacks; values past libsrtp2's last code.
#define srtp_err_status_buffer_small static_cast<srtp_err_status_t>(100)
#define srtp_err_status_cryptex_err static_cast<srtp_err_status_t>(101)

struct optin_srtp3_policy
{
	srtp_policy_t v2;
	unsigned char key[SRTP_MAX_KEY_LEN];
};

using optin_srtp3_policy_t = optin_srtp3_policy*;

static inline srtp_err_status_t optin_srtp_policy_create(optin_srtp3_policy_t* policy)
{
	auto* p = static_cast<optin_srtp3_policy*>(std::calloc(1, sizeof(optin_srtp3_policy)));
	if (p == nullptr)
		return srtp_err_status_alloc_fail;
	p->v2.key = p->key;
	*policy   = p;
	return srtp_err_status_ok;
}

static inline void optin_srtp_policy_destroy(optin_srtp3_policy_t policy)
{
	if (policy != nullptr)
	{
		// The key material must not linger in freed memory.
		std::memset(policy->key, 0, sizeof(policy->key));
		std::free(policy);
	}
}

static inline srtp_err_status_t optin_srtp_policy_set_ssrc(optin_srtp3_policy_t policy, srtp_ssrc_t ssrc)
{
	policy->v2.ssrc = ssrc;
	return srtp_err_status_ok;
}

static inline srtp_err_status_t optin_srtp_policy_set_profile(
  optin_srtp3_policy_t policy, srtp_profile_t profile)
{
	srtp_err_status_t err = srtp_crypto_policy_set_from_profile_for_rtp(&policy->v2.rtp, profile);
	if (err != srtp_err_status_ok)
		return err;
	return srtp_crypto_policy_set_from_profile_for_rtcp(&policy->v2.rtcp, profile);
}

static inline srtp_err_status_t optin_srtp_policy_add_key(
  optin_srtp3_policy_t policy,
  const uint8_t* key,
  size_t keyLen,
  const uint8_t* salt,
  size_t saltLen,
  const uint8_t* /*mki*/,
  size_t mkiLen)
{
	// libsrtp2 takes the master key immediately followed by the master salt.
	if (mkiLen != 0 || keyLen + saltLen > sizeof(policy->key))
		return srtp_err_status_bad_param;
	std::memcpy(policy->key, key, keyLen);
	std::memcpy(policy->key + keyLen, salt, saltLen);
	return srtp_err_status_ok;
}

static inline srtp_err_status_t optin_srtp_policy_set_allow_repeat_tx(
  optin_srtp3_policy_t policy, bool allow)
{
	policy->v2.allow_repeat_tx = allow ? 1 : 0;
	return srtp_err_status_ok;
}

static inline srtp_err_status_t optin_srtp_policy_set_window_size(
  optin_srtp3_policy_t policy, size_t windowSize)
{
	policy->v2.window_size = static_cast<unsigned long>(windowSize);
	return srtp_err_status_ok;
}

static inline srtp_err_status_t optin_srtp_create(srtp_t* session, const optin_srtp3_policy_t policy)
{
	return srtp_create(session, &policy->v2);
}

// libsrtp2 protects in place and needs room for the trailer after the packet.
static inline srtp_err_status_t optin_copy_in(
  const uint8_t* in, size_t inLen, uint8_t* out, size_t outCap, size_t trailer)
{
	if (inLen > INT_MAX || inLen + trailer > outCap)
		return srtp_err_status_buffer_small;
	if (in != out)
		std::memmove(out, in, inLen);
	return srtp_err_status_ok;
}

static inline srtp_err_status_t optin_srtp_protect(
  srtp_t ctx, const uint8_t* rtp, size_t rtpLen, uint8_t* srtp, size_t* srtpLen, size_t /*mkiIndex*/)
{
	srtp_err_status_t err = optin_copy_in(rtp, rtpLen, srtp, *srtpLen, SRTP_MAX_TRAILER_LEN);
	if (err != srtp_err_status_ok)
		return err;
	int len = static_cast<int>(rtpLen);
	err     = srtp_protect(ctx, srtp, &len);
	if (err == srtp_err_status_ok)
		*srtpLen = static_cast<size_t>(len);
	return err;
}

static inline srtp_err_status_t optin_srtp_protect_rtcp(
  srtp_t ctx, const uint8_t* rtcp, size_t rtcpLen, uint8_t* srtcp, size_t* srtcpLen, size_t /*mkiIndex*/)
{
	srtp_err_status_t err = optin_copy_in(rtcp, rtcpLen, srtcp, *srtcpLen, SRTP_MAX_TRAILER_LEN + 4);
	if (err != srtp_err_status_ok)
		return err;
	int len = static_cast<int>(rtcpLen);
	err     = srtp_protect_rtcp(ctx, srtcp, &len);
	if (err == srtp_err_status_ok)
		*srtcpLen = static_cast<size_t>(len);
	return err;
}

static inline srtp_err_status_t optin_srtp_unprotect(
  srtp_t ctx, const uint8_t* srtp, size_t srtpLen, uint8_t* rtp, size_t* rtpLen)
{
	srtp_err_status_t err = optin_copy_in(srtp, srtpLen, rtp, *rtpLen, 0);
	if (err != srtp_err_status_ok)
		return err;
	int len = static_cast<int>(srtpLen);
	err     = srtp_unprotect(ctx, rtp, &len);
	if (err == srtp_err_status_ok)
		*rtpLen = static_cast<size_t>(len);
	return err;
}

static inline srtp_err_status_t optin_srtp_unprotect_rtcp(
  srtp_t ctx, const uint8_t* srtcp, size_t srtcpLen, uint8_t* rtcp, size_t* rtcpLen)
{
	srtp_err_status_t err = optin_copy_in(srtcp, srtcpLen, rtcp, *rtcpLen, 0);
	if (err != srtp_err_status_ok)
		return err;
	int len = static_cast<int>(srtcpLen);
	err     = srtp_unprotect_rtcp(ctx, rtcp, &len);
	if (err == srtp_err_status_ok)
		*rtcpLen = static_cast<size_t>(len);
	return err;
}

static inline srtp_err_status_t optin_srtp_stream_remove(srtp_t session, uint32_t ssrc)
{
	return srtp_remove_stream(session, ssrc);
}

#define srtp_policy_t optin_srtp3_policy_t
#define srtp_policy_create optin_srtp_policy_create
#define srtp_policy_destroy optin_srtp_policy_destroy
#define srtp_policy_set_ssrc optin_srtp_policy_set_ssrc
#define srtp_policy_set_profile optin_srtp_policy_set_profile
#define srtp_policy_add_key optin_srtp_policy_add_key
#define srtp_policy_set_allow_repeat_tx optin_srtp_policy_set_allow_repeat_tx
#define srtp_policy_set_window_size optin_srtp_policy_set_window_size
#define srtp_create optin_srtp_create
#define srtp_protect optin_srtp_protect
#define srtp_protect_rtcp optin_srtp_protect_rtcp
#define srtp_unprotect optin_srtp_unprotect
#define srtp_unprotect_rtcp optin_srtp_unprotect_rtcp
#define srtp_stream_remove optin_srtp_stream_remove
