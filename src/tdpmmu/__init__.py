"""tdpmmu: an executable model of KVM x86's TDP MMU and a deterministic explorer."""
