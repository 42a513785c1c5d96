package auth

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// MaxRevokedFile bounds the revoked-keys file bastion reads.
const MaxRevokedFile = 64 << 20

// Revocations is the ssh.revoked_keys file: an OpenSSH key revocation
// list (KRL, the binary format of `ssh-keygen -k`, PROTOCOL.krl), or a
// text list of public keys and SHA256 fingerprints, one per line. It is
// checked for plain keys and for certificates (the certificate, its key
// and its CA), as OpenSSH's RevokedKeys.
type Revocations struct {
	keys   map[string]struct{} // plain key wire blobs
	sha1s  map[[sha1.Size]byte]struct{}
	sha256 map[[sha256.Size]byte]struct{}
	// certs by CA key blob; "" holds revocations for any CA.
	certs map[string]*revokedCerts
}

type revokedCerts struct {
	ranges  [][2]uint64
	bitmaps []serialBitmap
	keyIDs  map[string]struct{}
}

type serialBitmap struct {
	offset uint64
	bits   []byte // big-endian: bit 0 is the last byte's low bit
}

func newRevocations() *Revocations {
	return &Revocations{
		keys:   map[string]struct{}{},
		sha1s:  map[[sha1.Size]byte]struct{}{},
		sha256: map[[sha256.Size]byte]struct{}{},
		certs:  map[string]*revokedCerts{},
	}
}

// LoadRevocations reads a revoked-keys file. A file that cannot be read
// or parsed is an error: the caller must not run without it (OpenSSH
// refuses every key then).
func LoadRevocations(path string) (*Revocations, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRevokedFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxRevokedFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxRevokedFile)
	}
	r, err := ParseRevocations(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

var krlMagic = []byte("SSHKRL\n\x00")

// ParseRevocations parses a KRL or a text list (see Revocations).
func ParseRevocations(data []byte) (*Revocations, error) {
	if bytes.HasPrefix(data, krlMagic) {
		return parseKRL(data)
	}
	return parseRevokedList(data)
}

func parseRevokedList(data []byte) (*Revocations, error) {
	r := newRevocations()
	err := eachKeyLine(data, func(n int, line string) error {
		if fp, ok := strings.CutPrefix(line, "SHA256:"); ok {
			h, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fp, "="))
			if err != nil || len(h) != sha256.Size {
				return fmt.Errorf("line %d: bad SHA256 fingerprint", n)
			}
			r.sha256[[sha256.Size]byte(h)] = struct{}{}
			return nil
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("line %d: not a public key or SHA256 fingerprint: %w", n, err)
		}
		r.keys[string(plainBlob(k))] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// KRL section types (PROTOCOL.krl).
const (
	krlSectionCertificates   = 1
	krlSectionExplicitKey    = 2
	krlSectionFingerprintSHA = 3
	krlSectionSignature      = 4
	krlSectionFingerprint256 = 5
	krlSectionExtension      = 255

	krlCertSerialList   = 0x20
	krlCertSerialRange  = 0x21
	krlCertSerialBitmap = 0x22
	krlCertKeyID        = 0x23
	krlCertExtension    = 0x39
)

type wire struct {
	b   []byte
	err error
}

func (w *wire) fail(what string) {
	if w.err == nil {
		w.err = fmt.Errorf("truncated or malformed %s", what)
	}
}

func (w *wire) u8(what string) byte {
	if w.err != nil || len(w.b) < 1 {
		w.fail(what)
		return 0
	}
	v := w.b[0]
	w.b = w.b[1:]
	return v
}

func (w *wire) u32(what string) uint32 {
	if w.err != nil || len(w.b) < 4 {
		w.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint32(w.b)
	w.b = w.b[4:]
	return v
}

func (w *wire) u64(what string) uint64 {
	if w.err != nil || len(w.b) < 8 {
		w.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(w.b)
	w.b = w.b[8:]
	return v
}

func (w *wire) str(what string) []byte {
	n := w.u32(what)
	if w.err != nil || uint64(n) > uint64(len(w.b)) {
		w.fail(what)
		return nil
	}
	v := w.b[:n]
	w.b = w.b[n:]
	return v
}

func parseKRL(data []byte) (*Revocations, error) {
	r := newRevocations()
	w := &wire{b: data[len(krlMagic):]}
	if v := w.u32("header"); w.err == nil && v != 1 {
		return nil, fmt.Errorf("KRL format version %d is not supported", v)
	}
	w.u64("header") // krl_version
	w.u64("header") // generated_date
	w.u64("header") // flags
	w.str("header") // reserved
	w.str("header") // comment
	for w.err == nil && len(w.b) > 0 {
		typ := w.u8("section")
		if typ == krlSectionSignature {
			return nil, errors.New("signed KRLs are not supported (OpenSSH refuses them too)")
		}
		sec := &wire{b: w.str("section")}
		if w.err != nil {
			break
		}
		switch typ {
		case krlSectionCertificates:
			if err := r.parseCertSection(sec); err != nil {
				return nil, err
			}
		case krlSectionExplicitKey:
			for sec.err == nil && len(sec.b) > 0 {
				blob := sec.str("explicit key")
				k, err := ssh.ParsePublicKey(blob)
				if err != nil {
					return nil, fmt.Errorf("KRL explicit key: %w", err)
				}
				r.keys[string(plainBlob(k))] = struct{}{}
			}
		case krlSectionFingerprintSHA:
			for sec.err == nil && len(sec.b) > 0 {
				h := sec.str("SHA1 fingerprint")
				if sec.err == nil && len(h) != sha1.Size {
					return nil, errors.New("KRL SHA1 fingerprint of the wrong length")
				}
				if sec.err == nil {
					r.sha1s[[sha1.Size]byte(h)] = struct{}{}
				}
			}
		case krlSectionFingerprint256:
			for sec.err == nil && len(sec.b) > 0 {
				h := sec.str("SHA256 fingerprint")
				if sec.err == nil && len(h) != sha256.Size {
					return nil, errors.New("KRL SHA256 fingerprint of the wrong length")
				}
				if sec.err == nil {
					r.sha256[[sha256.Size]byte(h)] = struct{}{}
				}
			}
		case krlSectionExtension:
			if err := krlExtension(sec); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("KRL section type %d is not supported", typ)
		}
		if sec.err != nil {
			return nil, fmt.Errorf("KRL: %w", sec.err)
		}
	}
	if w.err != nil {
		return nil, fmt.Errorf("KRL: %w", w.err)
	}
	return r, nil
}

func krlExtension(sec *wire) error {
	name := sec.str("extension")
	crit := sec.u8("extension")
	sec.str("extension")
	if sec.err == nil && crit != 0 {
		return fmt.Errorf("KRL critical extension %q is not supported", clip(string(name), 64))
	}
	return nil
}

func (r *Revocations) parseCertSection(sec *wire) error {
	caBlob := sec.str("certificate section")
	sec.str("certificate section") // reserved
	if sec.err != nil {
		return fmt.Errorf("KRL: %w", sec.err)
	}
	ca := ""
	if len(caBlob) > 0 {
		k, err := ssh.ParsePublicKey(caBlob)
		if err != nil {
			return fmt.Errorf("KRL certificate section CA key: %w", err)
		}
		ca = string(plainBlob(k))
	}
	rc := r.certs[ca]
	if rc == nil {
		rc = &revokedCerts{keyIDs: map[string]struct{}{}}
		r.certs[ca] = rc
	}
	for sec.err == nil && len(sec.b) > 0 {
		typ := sec.u8("certificate subsection")
		sub := &wire{b: sec.str("certificate subsection")}
		if sec.err != nil {
			break
		}
		switch typ {
		case krlCertSerialList:
			for sub.err == nil && len(sub.b) > 0 {
				s := sub.u64("serial list")
				rc.ranges = append(rc.ranges, [2]uint64{s, s})
			}
		case krlCertSerialRange:
			lo, hi := sub.u64("serial range"), sub.u64("serial range")
			if sub.err == nil && lo > hi {
				return errors.New("KRL serial range with min > max")
			}
			rc.ranges = append(rc.ranges, [2]uint64{lo, hi})
		case krlCertSerialBitmap:
			off := sub.u64("serial bitmap")
			bits := sub.str("serial bitmap")
			if sub.err == nil && len(bits) > 0 && bits[0]&0x80 != 0 {
				return errors.New("KRL serial bitmap is negative")
			}
			rc.bitmaps = append(rc.bitmaps, serialBitmap{offset: off, bits: bytes.Clone(bits)})
		case krlCertKeyID:
			for sub.err == nil && len(sub.b) > 0 {
				id := sub.str("key ID")
				if sub.err == nil {
					rc.keyIDs[string(id)] = struct{}{}
				}
			}
		case krlCertExtension:
			if err := krlExtension(sub); err != nil {
				return err
			}
		default:
			return fmt.Errorf("KRL certificate subsection type %#x is not supported", typ)
		}
		if sub.err != nil {
			return fmt.Errorf("KRL: %w", sub.err)
		}
		if len(sub.b) > 0 {
			return errors.New("KRL: trailing data in a certificate subsection")
		}
	}
	return nil
}

func (rc *revokedCerts) revoked(c *ssh.Certificate) error {
	if _, ok := rc.keyIDs[c.KeyId]; ok {
		return fmt.Errorf("certificate key ID %q is revoked", clip(c.KeyId, 100))
	}
	if c.Serial == 0 { // serial 0 is "no serial" (OpenSSH ignores it)
		return nil
	}
	for _, rg := range rc.ranges {
		if c.Serial >= rg[0] && c.Serial <= rg[1] {
			return fmt.Errorf("certificate serial %d is revoked", c.Serial)
		}
	}
	for _, bm := range rc.bitmaps {
		if c.Serial < bm.offset {
			continue
		}
		n := c.Serial - bm.offset
		if n/8 >= uint64(len(bm.bits)) {
			continue
		}
		if bm.bits[len(bm.bits)-1-int(n/8)]&(1<<(n%8)) != 0 {
			return fmt.Errorf("certificate serial %d is revoked", c.Serial)
		}
	}
	return nil
}

// Revoked returns an error saying why key is revoked, or nil. For a
// certificate it checks the certificate (by CA and serial or key ID), its
// key and its CA's key. A nil *Revocations revokes nothing.
func (r *Revocations) Revoked(key ssh.PublicKey) error {
	if r == nil {
		return nil
	}
	if err := r.keyRevoked(key); err != nil {
		return err
	}
	if c, ok := key.(*ssh.Certificate); ok {
		if err := r.keyRevoked(c.SignatureKey); err != nil {
			return fmt.Errorf("the certificate's CA: %w", err)
		}
	}
	return nil
}

func (r *Revocations) keyRevoked(key ssh.PublicKey) error {
	blob := plainBlob(key)
	if _, ok := r.sha1s[sha1.Sum(blob)]; ok {
		return errors.New("key is revoked (SHA1 fingerprint)")
	}
	if _, ok := r.sha256[sha256.Sum256(blob)]; ok {
		return errors.New("key is revoked (SHA256 fingerprint)")
	}
	if _, ok := r.keys[string(blob)]; ok {
		return errors.New("key is revoked")
	}
	c, ok := key.(*ssh.Certificate)
	if !ok {
		return nil
	}
	if rc := r.certs[string(plainBlob(c.SignatureKey))]; rc != nil {
		if err := rc.revoked(c); err != nil {
			return err
		}
	}
	if rc := r.certs[""]; rc != nil {
		if err := rc.revoked(c); err != nil {
			return err
		}
	}
	return nil
}

// plainBlob is the wire form of a key, or of a certificate's key.
func plainBlob(k ssh.PublicKey) []byte {
	if c, ok := k.(*ssh.Certificate); ok {
		return c.Key.Marshal()
	}
	return k.Marshal()
}
