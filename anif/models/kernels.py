"""A fused ANI ensemble: every member of a species' network evaluated in one batched product.

:class:`FusedAniEnsemble` computes the same member energies as the stock
:class:`anif.models.StockAniEnsemble` (torchani's own forward pass) with far fewer operations:

- one AEV per atom shared by all members, from torchani's own radial and angular terms
  (``AEVComputer.radial`` / ``.angular``). For molecules the neighbour work is done once per
  call on the dense (B, N, N) distance matrix (pairs, per-centre neighbour lists, triples)
  without gradients; periodic cells go through torchani's all-pairs-with-shifts neighbour list
  and ``AEVComputer.compute_from_neighbors`` (any triclinic cell, also cells smaller than twice
  the cutoff). ANI's angular terms with the cosine cutoff (ANI-1x) are computed here with the
  same formula but triple-last (fewer slow broadcasts on the CPU); other terms are torchani's;
- per species, the members' first layers concatenated into one matrix (one GEMM for all
  members, the AEV is shared) and the deeper layers stacked into ``(M, in, out)`` tensors
  evaluated with ``baddbmm``;
- weights held as buffers, so a backward pass for forces computes no weight gradients;
  without gradients (screening) the CELU activations are applied in place, which spares
  large batches the allocation of fresh hidden-layer tensors.

On the CPU the same module runs by default on the compiled kernels of :mod:`anif.models.extension`
(``torch.ops.anif.aev`` for molecules and ``torch.ops.anif.networks``: descriptor and networks
with hand-written gradients, each member's input gradient computed while its weights are in
cache; the networks only for a few molecules' atoms, :attr:`FusedAniEnsemble.kernel_network_rows`);
the TorchScript operations above serve larger batches' networks, GPUs, periodic descriptors, other
descriptor settings, and machines where the kernels do not build.

The module is TorchScript-scriptable; it is what :func:`anif.models.load_model` returns for the
implementations ``"kernels"`` (the default) and ``"torchscript"`` (the same without the compiled kernels).
:func:`anif.models.score_structures` computes rho for many molecules of different sizes in padded batches.
"""

import math
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchani.aev import ANIAngular, ANIRadial
from torchani.cutoffs import CutoffCosine
from torchani.neighbors import all_pairs
from torchani.nn import TightCELU

from .extension import load as load_kernels


class FusedSpeciesNetwork(torch.nn.Module):
    """The M members' networks of one element, evaluated together.

    The input AEV is shared by all members, so the first layers form one ``(in, M * out)``
    matrix; deeper layers are ``(M, in, out)`` stacks. Returns atomic energies ``(M, atoms)``.
    """

    def __init__(self, networks: Sequence[torch.nn.Module]):
        super().__init__()
        layers = [list(net.layers) + [net.final_layer] for net in networks]
        depth = len(layers[0])
        if any(len(l) != depth for l in layers) or any(l.bias is None for ls in layers for l in ls):
            raise ValueError("fused networks need members of equal depth with biases")
        self.members = len(networks)
        self.activation = networks[0].activation
        # CELU (torchani's TightCELU: alpha 0.1) is applied in place when no gradients are recorded
        self.celu_alpha = _celu_alpha(self.activation)
        first = [ls[0] for ls in layers]
        self.hidden = int(first[0].out_features)
        # (in, M * out): column block m holds member m's first layer.
        self.register_buffer("w0", torch.cat([l.weight.detach().t() for l in first], 1).contiguous())
        self.register_buffer("b0", torch.cat([l.bias.detach() for l in first]).contiguous())
        self.layers = torch.nn.ModuleList([_StackedLinear([ls[j] for ls in layers]) for j in range(1, depth)])

    def forward(self, aev: Tensor) -> Tensor:
        n = aev.shape[0]
        h = torch.addmm(self.b0, aev, self.w0).view(n, self.members, self.hidden).transpose(0, 1)
        for layer in self.layers:
            if self.celu_alpha > 0.0 and not torch.is_grad_enabled():
                h = torch.nn.functional.celu(h, self.celu_alpha, inplace=True)  # no new large tensor
            else:
                h = self.activation(h)
            h = layer(h)
        return h.squeeze(-1)


def _celu_alpha(activation: torch.nn.Module) -> float:
    """alpha of a CELU activation module, or 0 for any other activation."""
    if isinstance(activation, torch.nn.CELU):
        return float(activation.alpha)
    if isinstance(activation, TightCELU):
        return 0.1
    return 0.0


class _StackedLinear(torch.nn.Module):
    """M linear layers of equal shape as one ``baddbmm``: (M, n, in) -> (M, n, out)."""

    def __init__(self, linears: Sequence[torch.nn.Linear]):
        super().__init__()
        self.register_buffer("weight", torch.stack([l.weight.detach().t() for l in linears]).contiguous())
        self.register_buffer("bias", torch.stack([l.bias.detach()[None] for l in linears]).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class FusedAniEnsemble(torch.nn.Module):
    """Member energies (M, B) in Hartree of a torchani ANI ensemble, fused for speed.

    The :class:`anif.models.Ensemble` contract: ``forward(species (B, N) atomic numbers
    with -1 padding, coordinates (B, N, 3) Angstrom, cell (3, 3) Angstrom or None, pbc (3,)
    bool or None)``. The wrapped torchani module stays available as ``.ani`` (for saving and
    training; it is not compiled by ``torch.jit.script``); weights are copied at construction,
    so re-wrap after changing ``.ani``'s weights. With ``kernels`` (default) CPU evaluations use
    the compiled kernels where they load and support the model (:meth:`kernels_support`);
    ``use_kernels`` tells whether they do.
    """

    __jit_ignored_attributes__ = ["ani"]
    # compile-time constants: a False flag keeps its path out of the compiled code
    __constants__ = ["use_kernels", "minimum_image", "kernel_network_rows"]
    #: Atoms (rows, padding included) up to which the networks run on the kernel's hand-written products
    #: (least overhead: one small molecule in MD); more go through torch's BLAS products, up to 4x faster
    #: on hundreds of atoms. Crossover on 2 AVX2 cores: about 19 atoms, with or without forces.
    kernel_network_rows = 16
    kernel_weights: list[Tensor]
    kernel_biases: list[Tensor]

    def __init__(self, ani: torch.nn.Module, kernels: bool = True, minimum_image: bool = True):
        super().__init__()
        nnp = ani.potentials["nnp"]
        if ani._has_extra_potentials:
            raise ValueError("fused evaluation supports ANI models without extra potentials")
        self.ani = ani
        self.aev_computer = nnp.aev_computer
        self.register_buffer("_atomic_numbers", ani.atomic_numbers.clone(), persistent=False)
        self.cutoff = float(self.aev_computer.radial.cutoff)
        self.angular_cutoff = float(self.aev_computer.angular.cutoff)
        angular = self.aev_computer.angular
        # torchani's own angular terms are used unless they are ANI's with the cosine cutoff
        self.ani_angular = isinstance(angular, ANIAngular) and isinstance(angular.cutoff_fn, CutoffCosine)
        self.register_buffer("triu_index", self.aev_computer.triu_index.clone(), persistent=False)
        self.num_pairs = int(self.aev_computer.num_species_pairs)
        self.num_species = int(len(ani.atomic_numbers))
        table = torch.full((max(int(z) for z in ani.atomic_numbers) + 2,), -1, dtype=torch.long)
        table[ani.atomic_numbers] = torch.arange(self.num_species)
        self.register_buffer("element_index", table, persistent=False)
        # float64 whatever the model's precision (see _apply): totals of hundreds of atoms keep their digits
        sae = ani.energy_shifter.self_energies.detach().double()
        self.register_buffer("self_energies", torch.cat([sae, sae.new_zeros(1)]))
        members = list(nnp.neural_networks.members)
        self.num_members = len(members)
        networks = [[m.atomics[s] for m in members] for s in ani.symbols]
        self.networks = torch.nn.ModuleList([FusedSpeciesNetwork(nets) for nets in networks])
        self.use_kernels = kernels and self.kernels_support(ani) and load_kernels()
        # periodic boxes of at least two cutoffs: the kernels' minimum image (else torchani's neighbour list)
        self.minimum_image = minimum_image and self.use_kernels
        self.kernel_weights, self.kernel_biases = [], []
        self.depth = len(networks[0][0].layers) + 1
        self.celu_alpha = float(self.networks[0].celu_alpha)
        self.radial_eta, self.angular_eta, self.zeta = 0.0, 0.0, 0.0
        if self.use_kernels:
            self.radial_eta = float(self.aev_computer.radial.eta)
            self.angular_eta = float(self.aev_computer.angular.eta)
            self.zeta = float(self.aev_computer.angular.zeta)
            for e, nets in enumerate(networks):
                for l in range(self.depth):
                    linears = [(list(net.layers) + [net.final_layer])[l] for net in nets]
                    weight = torch.stack([lin.weight.detach().t() for lin in linears])
                    self.register_buffer(f"kernel_w_{e}_{l}", weight.contiguous())
                    self.register_buffer(f"kernel_b_{e}_{l}", torch.stack([lin.bias.detach() for lin in linears]))
            self._collect_kernel_buffers()

    @property
    def atomic_numbers(self) -> Tensor:
        """The elements the model supports (a property, so the Ensemble protocol's runtime check sees it)."""
        return self._atomic_numbers

    @staticmethod
    def kernels_support(ani: torch.nn.Module) -> bool:
        """Whether the compiled kernels compute this model: ANI radial and angular terms with the
        cosine cutoff and single eta/zeta values, CELU networks of one depth."""
        aev = ani.potentials["nnp"].aev_computer
        terms = (aev.radial, aev.angular)
        if not (isinstance(aev.radial, ANIRadial) and isinstance(aev.angular, ANIAngular)):
            return False
        if any(not isinstance(t.cutoff_fn, CutoffCosine) or t.eta.numel() != 1 for t in terms):
            return False
        nets = [m.atomics[s] for m in ani.potentials["nnp"].neural_networks.members for s in ani.symbols]
        return (aev.angular.zeta.numel() == 1 and len({len(net.layers) for net in nets}) == 1
                and all(_celu_alpha(net.activation) > 0 for net in nets))

    def _collect_kernel_buffers(self) -> None:
        names = [f"{e}_{l}" for e in range(self.num_species) for l in range(self.depth)]
        self.kernel_weights = [getattr(self, f"kernel_w_{n}") for n in names]
        self.kernel_biases = [getattr(self, f"kernel_b_{n}") for n in names]

    def _apply(self, fn, *args, **kwargs):
        # .to() / .double() replace the buffers; the lists handed to the kernels must follow, and
        # the self energies move with the device but stay float64
        self_energies = self.self_energies
        result = super()._apply(fn, *args, **kwargs)
        self.self_energies = self_energies.to(self.element_index.device)
        if self.use_kernels:
            self._collect_kernel_buffers()
        return result

    def _molecule_aev(self, elem: Tensor, coordinates: Tensor) -> Tensor:
        """AEVs (B * N, features) of isolated molecules, with torchani's radial and angular terms.

        Neighbour work is done once, without gradients, on the dense (B, N, N) distance
        matrix: radial pairs i < j within the radial cutoff, and per centre atom a padded list
        of the neighbours within the angular cutoff, from which all side-atom pairs (triples)
        are taken. Only the geometry of the kept pairs and triples carries gradients.
        """
        b, n = elem.shape
        atoms = b * n
        s = self.num_species
        with torch.no_grad():
            x = coordinates.detach()
            d2 = (x.unsqueeze(2) - x.unsqueeze(1)).pow(2).sum(-1)
            real = elem >= 0
            distinct = ~torch.eye(n, dtype=torch.bool, device=elem.device)
            ok = real.unsqueeze(2) & real.unsqueeze(1) & distinct
            ij = torch.triu(ok & (d2 <= self.cutoff**2), 1).nonzero()
            first = ij[:, 0] * n + ij[:, 1]
            second = ij[:, 0] * n + ij[:, 2]
            angular = (ok & (d2 <= self.angular_cutoff**2)).view(atoms, n)
            count = angular.sum(1)
            k = int(count.max()) if atoms > 0 else 0
            local = torch.sort(angular.to(torch.int8), dim=1, descending=True, stable=True)[1][:, :k]
            base = torch.div(torch.arange(atoms, device=elem.device), n, rounding_mode="floor") * n
            neighbours = (local + base.unsqueeze(1)).view(-1)
            side = torch.triu_indices(k, k, 1, device=elem.device)
            centre, t = (side[1].unsqueeze(0) < count.unsqueeze(1)).nonzero().unbind(1)
            slots = torch.cat([centre * k + side[0][t], centre * k + side[1][t]])
            flat_elem = elem.reshape(-1)
            radial_index = torch.stack([first * s + flat_elem[second], second * s + flat_elem[first]])
            side_elem = flat_elem[neighbours[slots]].view(2, -1)
            angular_index = centre * self.num_pairs + self.triu_index[side_elem[0], side_elem[1]]
        flat = coordinates.reshape(-1, 3)
        distances = (flat.index_select(0, first) - flat.index_select(0, second)).norm(2, -1)
        radial_terms = self.aev_computer.radial(distances)
        radial = radial_terms.new_zeros((atoms * s, radial_terms.shape[1]))
        radial.index_add_(0, radial_index[0], radial_terms).index_add_(0, radial_index[1], radial_terms)
        # centre -> neighbour vectors (atoms * k, 3), then the two sides of every triple
        table = (flat.index_select(0, neighbours).view(atoms, k, 3) - flat.unsqueeze(1)).view(-1, 3)
        vectors = table.index_select(0, slots).view(2, -1, 3)
        if self.ani_angular:
            terms_t = self._ani_angular_t(vectors.norm(2, -1), vectors)
            angular_aev = terms_t.new_zeros((terms_t.shape[0], atoms * self.num_pairs))
            angular_aev = angular_aev.index_add_(1, angular_index, terms_t).t()
        else:
            angular_terms = self.aev_computer.angular(vectors.norm(2, -1), vectors)
            angular_aev = angular_terms.new_zeros((atoms * self.num_pairs, angular_terms.shape[1]))
            angular_aev.index_add_(0, angular_index, angular_terms)
        return torch.cat([radial.view(atoms, -1), angular_aev.reshape(atoms, -1)], 1)

    def _ani_angular_t(self, distances: Tensor, vectors: Tensor) -> Tensor:
        """torchani's ANIAngular terms with the cosine cutoff, transposed: (features, triples).

        Same formula as ``ANIAngular.forward``; the triple index runs along the last axis so
        the outer products broadcast over leading axes (fast on the CPU), and the cutoff
        factor is applied to the 4 radial values instead of the 32 products.
        """
        a = self.aev_computer.angular
        factor = 0.5 * torch.cos(distances * (math.pi / self.angular_cutoff)) + 0.5
        cos_angles = (vectors[0] * vectors[1]).sum(1) / torch.clamp(distances[0] * distances[1], min=1e-10)
        deviations = torch.acos(0.95 * cos_angles).unsqueeze(0) - a.sections.unsqueeze(1)
        angular = 2 * ((1 + torch.cos(deviations)) / 2) ** a.zeta
        mean = ((distances[0] + distances[1]) / 2).unsqueeze(0)
        radial = torch.exp(-a.eta * (mean - a.shifts.unsqueeze(1)) ** 2) * (factor[0] * factor[1])
        return (radial.unsqueeze(1) * angular.unsqueeze(0)).flatten(0, 1)  # also with no triples

    def forward(self, species: Tensor, coordinates: Tensor, cell: Optional[Tensor] = None,
                pbc: Optional[Tensor] = None) -> Tensor:
        energies = self.interaction_energies(species, coordinates, cell, pbc)
        return energies + self.self_energy(species).to(energies.dtype)

    @torch.jit.export
    def self_energy(self, species: Tensor) -> Tensor:
        """Sum of the atoms' self energies (B,), Hartree, always float64 (padding adds 0)."""
        return self.self_energies[self.element_index[species.clamp(-1, self.element_index.shape[0] - 1)]].sum(1)

    @torch.jit.export
    def interaction_energies(self, species: Tensor, coordinates: Tensor, cell: Optional[Tensor] = None,
                             pbc: Optional[Tensor] = None) -> Tensor:
        """Member energies (M, B) without the self energies, in the model's precision: add
        :meth:`self_energy` in float64 for totals that do not round at their magnitude."""
        # -1 pads (and numbers beyond the table) land on the table's last entry, -1
        elem = self.element_index[species.clamp(-1, self.element_index.shape[0] - 1)]
        if bool(((elem < 0) & (species >= 0)).any()):
            raise ValueError("species contains an element the model does not support")
        b, n = elem.shape
        periodic = pbc is not None and bool(pbc.any())
        kernels = self.use_kernels and coordinates.device.type == "cpu"
        if periodic:
            if cell is None or b != 1:
                raise ValueError("periodic evaluation needs a cell and one structure per call")
        if kernels and (not periodic or (self.minimum_image and self._minimum_image_box(cell, pbc))):
            box = cell if periodic and cell is not None else coordinates.new_zeros(0)
            aev = torch.ops.anif.aev(
                coordinates, elem, self.aev_computer.radial.shifts, self.radial_eta, self.cutoff,
                self.aev_computer.angular.shifts, self.aev_computer.angular.sections, self.angular_eta, self.zeta,
                self.angular_cutoff, self.triu_index, box,
            )
        elif periodic:
            neighbours = all_pairs(self.cutoff, elem, coordinates, cell, pbc)
            aev = self.aev_computer.compute_from_neighbors(elem, coordinates, neighbours).view(b * n, -1)
        else:
            aev = self._molecule_aev(elem, coordinates)
        if self.use_kernels and aev.device.type == "cpu" and aev.size(0) <= self.kernel_network_rows:
            energies = torch.ops.anif.networks(
                aev, elem.reshape(-1), b, self.depth, self.kernel_weights, self.kernel_biases, self.celu_alpha,
            )
        else:
            energies = self._member_energies(aev, elem)
        return energies

    def _minimum_image_box(self, cell: Optional[Tensor], pbc: Optional[Tensor]) -> bool:
        """Whether the kernels' minimum-image neighbours are exact for this cell: periodic in all three
        directions, an OpenMM reduced box (lower triangular), every perpendicular width >= 2 cutoffs."""
        if cell is None or pbc is None or not bool(pbc.all()):
            return False
        upper = cell.triu(1).abs().sum()
        return bool((upper == 0) & (torch.diagonal(cell).min() >= 2 * self.cutoff))

    def _member_energies(self, aev: Tensor, elem: Tensor) -> Tensor:
        """(M, B) sums of the members' atomic energies from AEVs (B * N, features), in TorchScript."""
        b, n = elem.shape
        # Atoms grouped by element once; each element's slice goes through its fused network.
        flat_elem = elem.view(-1)
        order = torch.argsort(flat_elem, stable=True)
        counts: list[int] = torch.bincount(flat_elem + 1, minlength=self.num_species + 1).tolist()
        aev = aev.index_select(0, order)
        start = counts[0]
        atomic: list[Tensor] = []
        for e, net in enumerate(self.networks):
            size = counts[e + 1]
            if size > 0:
                atomic.append(net(aev.narrow(0, start, size)))
            start += size
        molecule = torch.div(order.narrow(0, counts[0], start - counts[0]), n, rounding_mode="floor")
        energies = aev.new_zeros((self.num_members, b))
        if len(atomic) > 0:
            energies = energies.index_add(1, molecule, torch.cat(atomic, 1))
        return energies
