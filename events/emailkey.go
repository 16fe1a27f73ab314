package events

// EmailKeyer turns an email into what stands for it wherever an email is a
// key (the claims topic, the email index, the partition of either). Equal
// addresses (see NormalizeEmail) get equal keys. pii.Codec implements it
// with an HMAC of the normalized email, so that the address itself is not
// stored.
type EmailKeyer interface {
	EmailKey(email string) string
}
