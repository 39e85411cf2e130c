package function

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
)

// requestIDs makes invocation ids: the AES-128 encryption of the
// invocation's sequence number under a key drawn when the host starts,
// written as a version 4 UUID (the shape Lambda's request ids have). Ids
// are unique within a host (the cipher is a permutation; the version bits
// leave 122 bits) and cannot be predicted from ids seen before, so a
// process cannot guess the id of another function's invocation. Encrypting
// is read-only on the expanded key: safe for concurrent use.
type requestIDs struct{ block cipher.Block }

func newRequestIDs() (*requestIDs, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return &requestIDs{block: b}, nil
}

func (r *requestIDs) id(seq uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], seq)
	r.block.Encrypt(b[:], b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
